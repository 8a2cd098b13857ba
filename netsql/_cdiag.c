/* _cdiag: sock_diag dump messages to row tuples, compiled (sockdiag.py holds the
 * pure-Python twin, _py_rows, and tests/test_sockdiag.py compares the two).
 *
 * rows(buf, n, out) -> status
 *
 * Appends one tuple per inet_diag_msg in buf[:n] to the list `out`:
 *     (family, state, sport, dport, local, remote, rqueue, wqueue, uid, inode, tcp)
 * local/remote are address text (remote and dport None for an unconnected socket: port
 * 0 and address all zeros); tcp is None, or, when the message carries INET_DIAG_INFO
 * (struct tcp_info), (bytes_sent, bytes_acked, bytes_received, bytes_retrans, segs_out,
 * segs_in, total_retrans, rtt seconds, last send seconds, last receive seconds), each
 * None when the kernel's struct is too old to hold it.
 * status: 0 more messages follow, 1 the dump is done, -errno the kernel's error.
 *
 * columns(buf, n, cols, states, protocol, ns) -> status
 *
 * The sockets table's columns straight from the messages, no row tuples: appends to
 * the 12 lists of cols (family, protocol, local_address, local_port, remote_address,
 * remote_port, state, tx_queue, rx_queue, uid, inode, net_namespace) one value each per
 * socket; states[state number] is the state column's value, protocol and ns go in as
 * given. (sockdiag._py_columns is the twin.) Measured with 40,000 sockets: rows() and
 * then a column at a time in Python took 26 ms of a 180 ms one-liner; this takes 6.
 *
 * read_many(pids, files, links, threads) -> list
 *
 * (Here because this is netsql's one compiled module outside the capture: the /proc
 * files a processes pass reads of every process.) One tuple per pid of `pids`: the
 * bytes of /proc/PID/NAME for each NAME of `files` (read as procfs.read_bytes reads a
 * file: 64 KiB at a time until a read comes back short; None when it cannot be opened
 * or read), then the text of the link /proc/PID/NAME for each NAME of `links` (as
 * os.readlink gives it; None when it cannot be read). The files are read by `threads`
 * threads without the GIL, each taking every threads-th pid; the Python objects are
 * made afterwards. (procfs._py_read_many is the twin; tests/test_procfs_read.py
 * compares the two.) Measured with 2,000 processes, /proc/PID/stat, statm and the cwd
 * link of each: 52 ms in Python's os calls, 47 ms here on one thread, 24 ms on two
 * (the kernel's side of /proc scales with the cores; ps reads on one).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NLMSG_ERROR 2
#define NLMSG_DONE 3
#define SOCK_DIAG_BY_FAMILY 20
#define TCPDIAG_GETSOCK 18 /* the older request: both families' TCP in one dump */
#define INET_DIAG_INFO 2
#define MSG_LEN 72 /* struct inet_diag_msg */

static inline uint32_t u32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4); /* host order, as netlink is */
    return v;
}

static inline uint64_t u64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Address text repeats (127.0.0.1, ::): a direct-mapped cache of str objects. */
static struct { int family; unsigned char raw[16]; PyObject *text; } seen[512];

static PyObject *address(int family, const unsigned char *raw)
{
    size_t len = family == AF_INET ? 4 : 16;
    unsigned h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ raw[i]) * 16777619u;
    h = (h ^ h >> 9 ^ h >> 18) & 511;
    if (seen[h].text != NULL && seen[h].family == family && !memcmp(seen[h].raw, raw, len))
        return Py_NewRef(seen[h].text);
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(family, raw, text, sizeof text) == NULL)
        return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *s = PyUnicode_FromString(text);
    if (s != NULL) {
        Py_XSETREF(seen[h].text, Py_NewRef(s));
        seen[h].family = family;
        memcpy(seen[h].raw, raw, len);
    }
    return s;
}

/* The tcp_info counters the flows table shows (offsets of struct tcp_info). */
static PyObject *tcp_counters(const unsigned char *info, size_t n)
{
    PyObject *v[10];
#define Q(i, off) v[i] = n >= (off) + 8 ? PyLong_FromUnsignedLongLong(u64(info + (off))) \
                                        : Py_NewRef(Py_None)
#define I(i, off) v[i] = n >= (off) + 4 ? PyLong_FromUnsignedLong(u32(info + (off))) \
                                        : Py_NewRef(Py_None)
    Q(0, 200); /* tcpi_bytes_sent */
    Q(1, 120); /* tcpi_bytes_acked */
    Q(2, 128); /* tcpi_bytes_received */
    Q(3, 208); /* tcpi_bytes_retrans */
    I(4, 136); /* tcpi_segs_out */
    I(5, 140); /* tcpi_segs_in */
    I(6, 100); /* tcpi_total_retrans */
    v[7] = n >= 72 ? PyFloat_FromDouble(u32(info + 68) / 1e6) : Py_NewRef(Py_None);
    /* tcpi_last_data_sent @44, tcpi_last_data_recv @52 (ms); the four last_* together */
    v[8] = n >= 60 ? PyFloat_FromDouble(u32(info + 44) / 1e3) : Py_NewRef(Py_None);
    v[9] = n >= 60 ? PyFloat_FromDouble(u32(info + 52) / 1e3) : Py_NewRef(Py_None);
#undef Q
#undef I
    int ok = 1;
    for (int i = 0; i < 10; i++)
        ok &= v[i] != NULL;
    PyObject *t = ok ? PyTuple_New(10) : NULL;
    if (t != NULL)
        PyObject_GC_UnTrack(t);
    for (int i = 0; i < 10; i++) {
        if (t != NULL)
            PyTuple_SET_ITEM(t, i, v[i]);
        else
            Py_XDECREF(v[i]);
    }
    return t;
}

static PyObject *one(const unsigned char *m, size_t len)
{
    static const unsigned char zero[16];
    int family = m[0];
    if (family != AF_INET && family != AF_INET6)
        Py_RETURN_NONE;
    size_t alen = family == AF_INET ? 4 : 16;
    unsigned sport = (unsigned)m[4] << 8 | m[5], dport = (unsigned)m[6] << 8 | m[7];
    PyObject *local = address(family, m + 8), *remote, *tcp;
    if (dport == 0 && !memcmp(m + 24, zero, alen))
        remote = Py_NewRef(Py_None);
    else
        remote = address(family, m + 24);
    tcp = Py_NewRef(Py_None);
    for (size_t a = MSG_LEN; a + 4 <= len;) { /* attributes */
        unsigned alen_ = (unsigned)m[a] | (unsigned)m[a + 1] << 8;
        unsigned atype = (unsigned)m[a + 2] | (unsigned)m[a + 3] << 8;
        if (alen_ < 4)
            break;
        if (atype == INET_DIAG_INFO) {
            size_t end = a + alen_ < len ? a + alen_ : len;
            Py_XSETREF(tcp, tcp_counters(m + a + 4, end - a - 4));
            if (tcp == NULL)
                break; /* out of memory: the exception stands */
        }
        a += (alen_ + 3) & ~3u;
    }
    if (local == NULL || remote == NULL || tcp == NULL) {
        Py_XDECREF(local);
        Py_XDECREF(remote);
        Py_XDECREF(tcp);
        return NULL;
    }
    /* expires @52, rqueue @56, wqueue @60, uid @64, inode @68 */
    PyObject *rport = remote == Py_None ? Py_NewRef(Py_None) : PyLong_FromUnsignedLong(dport);
    if (rport == NULL) {
        Py_DECREF(local);
        Py_DECREF(remote);
        Py_DECREF(tcp);
        return NULL;
    }
    PyObject *row = Py_BuildValue("iiINNNkkkkN", family, (int)m[1], sport, rport, local,
                                  remote, (unsigned long)u32(m + 56),
                                  (unsigned long)u32(m + 60), (unsigned long)u32(m + 64),
                                  (unsigned long)u32(m + 68), tcp);
    /* numbers, strings and a tuple of numbers: never part of a cycle, so the cyclic
     * collector need not walk the tens of thousands a dump makes */
    if (row != NULL)
        PyObject_GC_UnTrack(row);
    return row;
}

/* Each inet_diag_msg of buf[:n] handed to each(message, length, ctx) (0 ok, -1 a Python
 * error); the status as rows() returns it, or WALK_FAILED when each failed. */
#define WALK_FAILED 1000000L
typedef int (*each_fn)(const unsigned char *m, size_t len, void *ctx);

static long walk(const unsigned char *p, Py_ssize_t n, each_fn each, void *ctx)
{
    long status = 0;
    for (Py_ssize_t off = 0; off + 16 <= n;) {
        uint32_t length = u32(p + off);
        unsigned kind = (unsigned)p[off + 4] | (unsigned)p[off + 5] << 8;
        if (length < 16 || kind == NLMSG_DONE) {
            status = 1;
            break;
        }
        if (kind == NLMSG_ERROR) {
            int32_t err = off + 20 <= n ? (int32_t)u32(p + off + 16) : 0;
            status = err ? err : 1;
            break;
        }
        size_t len = (size_t)length - 16;
        if ((Py_ssize_t)length > n - off)
            len = (size_t)(n - off - 16);
        if ((kind == SOCK_DIAG_BY_FAMILY || kind == TCPDIAG_GETSOCK) && len >= MSG_LEN) {
            if (each(p + off + 16, len, ctx) < 0)
                return WALK_FAILED;
        }
        off += ((Py_ssize_t)length + 3) & ~(Py_ssize_t)3; /* length >= 16: progress */
    }
    return status;
}

static int append_row(const unsigned char *m, size_t len, void *out)
{
    PyObject *row = one(m, len);
    if (row == NULL || (row != Py_None && PyList_Append((PyObject *)out, row) < 0)) {
        Py_XDECREF(row);
        return -1;
    }
    Py_DECREF(row);
    return 0;
}

static PyObject *rows(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer buf;
    Py_ssize_t n;
    PyObject *out;
    if (!PyArg_ParseTuple(args, "y*nO!", &buf, &n, &PyList_Type, &out))
        return NULL;
    if (n > buf.len)
        n = buf.len;
    long status = walk(buf.buf, n, append_row, out);
    PyBuffer_Release(&buf);
    return status == WALK_FAILED ? NULL : PyLong_FromLong(status);
}

enum { C_FAMILY, C_PROTOCOL, C_LADDR, C_LPORT, C_RADDR, C_RPORT, C_STATE, C_TXQ, C_RXQ,
       C_UID, C_INODE, C_NS, NCOLS };

struct columns_ctx {
    PyObject *cols[NCOLS]; /* borrowed lists */
    PyObject *states;      /* borrowed list of 256 */
    PyObject *protocol, *ns;
};

static PyObject *ipv4_text, *ipv6_text;

/* Port numbers as int objects, made once each: most sockets' ports are above the
 * interpreter's small ints, and each would be a new object per socket per dump. */
static PyObject *ports[65536];

static PyObject *port(unsigned p)
{
    if (ports[p] == NULL && (ports[p] = PyLong_FromUnsignedLong(p)) == NULL)
        return NULL;
    return Py_NewRef(ports[p]);
}

/* Append a new reference to a list, consuming it. */
static inline int put(PyObject *list, PyObject *v)
{
    if (v == NULL)
        return -1;
    int r = PyList_Append(list, v);
    Py_DECREF(v);
    return r;
}

static int append_columns(const unsigned char *m, size_t len, void *ctx_)
{
    (void)len;
    static const unsigned char zero[16];
    struct columns_ctx *c = ctx_;
    int family = m[0];
    if (family != AF_INET && family != AF_INET6)
        return 0;
    size_t alen = family == AF_INET ? 4 : 16;
    unsigned sport = (unsigned)m[4] << 8 | m[5], dport = (unsigned)m[6] << 8 | m[7];
    int connected = dport != 0 || memcmp(m + 24, zero, alen);
    /* rqueue @56, wqueue @60, uid @64, inode @68 */
    if (PyList_Append(c->cols[C_FAMILY], family == AF_INET ? ipv4_text : ipv6_text) < 0
        || PyList_Append(c->cols[C_PROTOCOL], c->protocol) < 0
        || put(c->cols[C_LADDR], address(family, m + 8)) < 0
        || put(c->cols[C_LPORT], port(sport)) < 0
        || (connected ? put(c->cols[C_RADDR], address(family, m + 24))
                      : PyList_Append(c->cols[C_RADDR], Py_None)) < 0
        || (connected ? put(c->cols[C_RPORT], port(dport))
                      : PyList_Append(c->cols[C_RPORT], Py_None)) < 0
        || PyList_Append(c->cols[C_STATE], PyList_GET_ITEM(c->states, m[1])) < 0
        || put(c->cols[C_TXQ], PyLong_FromUnsignedLong(u32(m + 60))) < 0
        || put(c->cols[C_RXQ], PyLong_FromUnsignedLong(u32(m + 56))) < 0
        || put(c->cols[C_UID], PyLong_FromUnsignedLong(u32(m + 64))) < 0
        || put(c->cols[C_INODE], PyLong_FromUnsignedLong(u32(m + 68))) < 0
        || PyList_Append(c->cols[C_NS], c->ns) < 0)
        return -1;
    return 0;
}

static PyObject *columns(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer buf;
    Py_ssize_t n;
    PyObject *cols;
    struct columns_ctx c;
    if (!PyArg_ParseTuple(args, "y*nO!O!OO", &buf, &n, &PyList_Type, &cols, &PyList_Type,
                          &c.states, &c.protocol, &c.ns))
        return NULL;
    if (PyList_GET_SIZE(cols) != NCOLS || PyList_GET_SIZE(c.states) != 256) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "columns: 12 lists and 256 states expected");
        return NULL;
    }
    for (int i = 0; i < NCOLS; i++) {
        c.cols[i] = PyList_GET_ITEM(cols, i);
        if (!PyList_Check(c.cols[i])) {
            PyBuffer_Release(&buf);
            PyErr_SetString(PyExc_TypeError, "columns: a column is not a list");
            return NULL;
        }
    }
    if (n > buf.len)
        n = buf.len;
    long status = walk(buf.buf, n, append_columns, &c);
    PyBuffer_Release(&buf);
    return status == WALK_FAILED ? NULL : PyLong_FromLong(status);
}

/* -- read_many --------------------------------------------------------------------- */

#define CHUNK 65536

struct slot {
    char *data;  /* malloc'd; NULL with len 0 for an empty file */
    ssize_t len; /* -1: None */
};

struct job {
    const long *pids;
    Py_ssize_t npids;
    const char *const *names; /* files, then links */
    int nfiles, nnames;
    struct slot *slots; /* npids * nnames */
    Py_ssize_t start, step;
};

/* /proc/PID/NAME whole into *slot (len -1 when it cannot be opened or read). */
static void read_file(const char *path, char *scratch, struct slot *slot)
{
    slot->data = NULL;
    slot->len = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char *data = NULL;
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, scratch, CHUNK);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            free(data);
            close(fd);
            return;
        }
        char *grown = realloc(data, len + (size_t)r + 1);
        if (grown == NULL) {
            free(data);
            close(fd);
            return;
        }
        data = grown;
        memcpy(data + len, scratch, (size_t)r);
        len += (size_t)r;
        if (r < CHUNK) /* procfs.read_bytes: a short read ends the file */
            break;
    }
    close(fd);
    slot->data = data;
    slot->len = (ssize_t)len;
}

static void read_link(const char *path, struct slot *slot)
{
    char buf[PATH_MAX + 1];
    slot->data = NULL;
    slot->len = -1;
    ssize_t n = readlink(path, buf, PATH_MAX); /* as os.readlink: at most PATH_MAX */
    if (n < 0)
        return;
    char *data = malloc((size_t)n + 1);
    if (data == NULL)
        return;
    memcpy(data, buf, (size_t)n);
    slot->data = data;
    slot->len = n;
}

static void *run_job(void *arg)
{
    struct job *job = arg;
    char *scratch = malloc(CHUNK);
    char path[64 + 256];
    for (Py_ssize_t i = job->start; i < job->npids; i += job->step) {
        for (int k = 0; k < job->nnames; k++) {
            struct slot *slot = &job->slots[i * job->nnames + k];
            if (snprintf(path, sizeof path, "/proc/%ld/%s", job->pids[i], job->names[k]) >=
                    (int)sizeof path || (k < job->nfiles && scratch == NULL)) {
                slot->data = NULL;
                slot->len = -1;
            } else if (k < job->nfiles) {
                read_file(path, scratch, slot);
            } else {
                read_link(path, slot);
            }
        }
    }
    free(scratch);
    return NULL;
}

static PyObject *read_many(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *pids_list, *files, *links;
    int threads;
    if (!PyArg_ParseTuple(args, "O!O!O!i", &PyList_Type, &pids_list, &PyList_Type, &files,
                          &PyList_Type, &links, &threads))
        return NULL;
    Py_ssize_t npids = PyList_GET_SIZE(pids_list);
    Py_ssize_t nfiles = PyList_GET_SIZE(files), nlinks = PyList_GET_SIZE(links);
    if (nfiles + nlinks > 64) {
        PyErr_SetString(PyExc_ValueError, "read_many: at most 64 names");
        return NULL;
    }
    int nnames = (int)(nfiles + nlinks);
    const char *names[64];
    for (int k = 0; k < nnames; k++) {
        PyObject *name = k < nfiles ? PyList_GET_ITEM(files, k)
                                    : PyList_GET_ITEM(links, k - nfiles);
        Py_ssize_t size;
        names[k] = PyUnicode_Check(name) ? PyUnicode_AsUTF8AndSize(name, &size) : NULL;
        if (names[k] == NULL || size > 255 || (Py_ssize_t)strlen(names[k]) != size) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "read_many: a name must be short text");
            return NULL;
        }
    }
    long *pids = PyMem_Malloc(sizeof(long) * (size_t)(npids ? npids : 1));
    struct slot *slots = PyMem_Calloc((size_t)(npids * nnames > 0 ? npids * nnames : 1),
                                      sizeof(struct slot));
    if (pids == NULL || slots == NULL) {
        PyMem_Free(pids);
        PyMem_Free(slots);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < npids; i++) {
        pids[i] = PyLong_AsLong(PyList_GET_ITEM(pids_list, i));
        if (pids[i] == -1 && PyErr_Occurred()) {
            PyMem_Free(pids);
            PyMem_Free(slots);
            return NULL;
        }
    }
    if (threads < 1)
        threads = 1;
    if (threads > 16)
        threads = 16;
    struct job jobs[16];
    pthread_t tids[16];
    int started[16] = {0};
    Py_BEGIN_ALLOW_THREADS
    for (int t = 0; t < threads; t++) {
        jobs[t] = (struct job){pids, npids, names, (int)nfiles, nnames, slots, t, threads};
        if (t > 0)
            started[t] = pthread_create(&tids[t], NULL, run_job, &jobs[t]) == 0;
    }
    run_job(&jobs[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(tids[t], NULL);
        else
            run_job(&jobs[t]); /* no thread: read its share here */
    }
    Py_END_ALLOW_THREADS
    PyObject *out = PyList_New(npids);
    for (Py_ssize_t i = 0; i < npids; i++) {
        PyObject *row = out ? PyTuple_New(nnames) : NULL;
        for (int k = 0; k < nnames; k++) {
            struct slot *slot = &slots[i * nnames + k];
            if (row != NULL) {
                PyObject *v;
                if (slot->len < 0)
                    v = Py_NewRef(Py_None);
                else if (k < nfiles)
                    v = PyBytes_FromStringAndSize(slot->data ? slot->data : "", slot->len);
                else
                    v = PyUnicode_DecodeFSDefaultAndSize(slot->data, slot->len);
                if (v == NULL)
                    Py_CLEAR(row);
                else
                    PyTuple_SET_ITEM(row, k, v);
            }
            free(slot->data);
        }
        if (row == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, row);
    }
    PyMem_Free(pids);
    PyMem_Free(slots);
    return out;
}

static PyMethodDef methods[] = {
    {"rows", rows, METH_VARARGS, "rows(buf, n, out) -> status: sock_diag messages to tuples"},
    {"columns", columns, METH_VARARGS,
     "columns(buf, n, cols, states, protocol, ns) -> status: sock_diag messages to the "
     "sockets table's columns"},
    {"read_many", read_many, METH_VARARGS,
     "read_many(pids, files, links, threads) -> list: /proc/PID files and links, each "
     "pid's in a tuple"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cdiag", "Compiled sock_diag message parsing for sockdiag.py; /proc reading for procfs.py.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cdiag(void)
{
    if (ipv4_text == NULL && (ipv4_text = PyUnicode_InternFromString("ipv4")) == NULL)
        return NULL;
    if (ipv6_text == NULL && (ipv6_text = PyUnicode_InternFromString("ipv6")) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
