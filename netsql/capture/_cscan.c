/* _cscan: the classic-pcap walk of netsql.capture.fastscan.Scan, compiled.
 *
 * scan_pcap(scan, buf, pos, big_endian, divisor, extra, linktype, portmap, mode)
 *     -> (pos, records, bad_length)
 *
 * Walks the complete records of `buf` (a classic pcap file's bytes from `pos`), parses
 * link, IP and UDP headers exactly as Scan.feed does, and for each DNS message either
 * pairs it itself or calls scan._message(). mode bit 1: the question is wanted; bit 2:
 * the answers are. A plain question (no compression, no character that needs escaping)
 * is read here, and so are answers when every one is an A or AAAA record of class IN
 * owned by a pointer to that question (the usual response); any other message goes to
 * Python (dnswire.decode_dns), so both paths give the same rows. Frames Scan.feed hands
 * to the general decoder go to scan._general().
 * State lives in the Scan object (pairing.table, rows, counters), so the two paths
 * can be mixed and must agree row for row; tests/test_fastscan.py checks that they do.
 * Queries and responses are paired by the rule of netsql/capture/pairing.py, mirrored
 * in pair_query/pair_response below (tests/test_dns_policy.py holds all paths to it).
 *
 * Stops before the first incomplete record (pos says where; the caller reads more) or
 * at a record claiming more than 16 MiB (bad_length is that length, pos its offset).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#define MAX_RECORD (1u << 24)
#define ROW_LEN 18
enum { R_TS, R_CADDR, R_CPORT, R_SADDR, R_SPORT, R_TRANSPORT, R_TID, R_QUERY, R_QTYPE,
       R_QCLASS, R_RCODE, R_FLAGS, R_ANSWERS, R_RTT = 15, R_IFACE = 16, R_STATUS = 17 };

static PyObject *s_udp, *s_unanswered, *s_answered, *s_response_only, *s_type_a, *s_type_aaaa;
static PyObject *s_names;
static PyObject *s_pairing, *s_table, *s_rows, *s_general, *s_message;
static PyObject *s_messages, *s_queries, *s_responses, *s_malformed, *s_first_ts;
static PyObject *s_duplicates;

typedef struct {
    PyObject *scan, *pairing, *table, *rows, *names;
    const unsigned char *ports; /* 65536-bit bitmap */
    int mode;
    long messages, queries, responses, malformed, duplicates;
} State;

/* Ports and transaction ids repeat: one int object per value, made on first use. */
static PyObject *ints[65536];

static PyObject *int16(unsigned v)
{
    if (ints[v] == NULL)
        ints[v] = PyLong_FromLong(v);
    return Py_XNewRef(ints[v]);
}

/* So do addresses: a direct-mapped cache of their bytes objects. */
static struct { Py_ssize_t len; unsigned char raw[16]; PyObject *obj; } addrs[256];

static PyObject *address(const unsigned char *raw, Py_ssize_t len)
{
    unsigned h = 2166136261u;
    for (Py_ssize_t i = 0; i < len; i++)
        h = (h ^ raw[i]) * 16777619u;
    h = (h ^ h >> 8 ^ h >> 16) & 255;
    if (addrs[h].obj != NULL && addrs[h].len == len && !memcmp(addrs[h].raw, raw, len))
        return Py_NewRef(addrs[h].obj);
    PyObject *obj = PyBytes_FromStringAndSize((const char *)raw, len);
    if (obj != NULL) {
        Py_XSETREF(addrs[h].obj, Py_NewRef(obj));
        addrs[h].len = len;
        memcpy(addrs[h].raw, raw, len);
    }
    return obj;
}

#define RD16(p) ((unsigned)(p)[0] << 8 | (unsigned)(p)[1])

static inline uint32_t rd32(const unsigned char *p, int be)
{
    if (be)
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static inline int port_in(const State *st, unsigned port)
{
    return st->ports[port >> 3] >> (port & 7) & 1;
}

/* Set row[i] (a new list's slot holding None) to a new reference. */
static void put(PyObject *row, int i, PyObject *value)
{
    Py_DECREF(PyList_GET_ITEM(row, i));
    PyList_SET_ITEM(row, i, value);
}

static PyObject *new_row(double ts, PyObject *caddr, PyObject *cport, PyObject *saddr,
                         PyObject *sport, PyObject *tid, PyObject *flags, PyObject *status)
{
    PyObject *row = PyList_New(ROW_LEN), *t = PyFloat_FromDouble(ts);
    if (row == NULL || t == NULL) {
        Py_XDECREF(row);
        Py_XDECREF(t);
        return NULL;
    }
    /* A row holds numbers, bytes and strings (later lists of them): never a cycle, so
     * the cyclic collector need not walk 100,000s of them. */
    PyObject_GC_UnTrack(row);
    for (int i = 0; i < ROW_LEN; i++)
        PyList_SET_ITEM(row, i, Py_NewRef(Py_None));
    PyObject *vals[] = {t, caddr, cport, saddr, sport, s_udp, tid};
    for (int i = 0; i < 7; i++)
        put(row, i, i == R_TS ? t : Py_NewRef(vals[i]));
    put(row, R_FLAGS, Py_NewRef(flags));
    put(row, R_STATUS, Py_NewRef(status));
    return row;
}

static int row_ts(PyObject *row, double *out)
{
    *out = PyFloat_AsDouble(PyList_GET_ITEM(row, R_TS));
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* Bytes a name shows as themselves (dnswire._PLAIN without the separator). */
static int plain_byte(unsigned c)
{
    return c > 0x20 && c < 0x7F && c != '.' && !strchr("\"().;\\@$", (int)c);
}

/* The first question when it is plain: no compression, at least one label, only bytes
 * that need no escaping; its text lower-cased as dnswire.decode_dns gives it. Returns 1
 * (found), 0 (not plain: Python decodes the message) or -1 (error). */
static int plain_question(const unsigned char *dns, Py_ssize_t n, PyObject **name,
                          unsigned *qtype, unsigned *qclass, Py_ssize_t *qend)
{
    char text[256];
    Py_ssize_t t = 0, off = 12, stop = n - 1 < 12 + 254 ? n - 1 : 12 + 254;
    if (n < 13 || RD16(dns + 4) == 0)
        return 0;
    while (dns[off] != 0) {
        unsigned ln = dns[off];
        Py_ssize_t next = off + 1 + ln;
        if (ln >= 64 || next > stop)
            return 0;
        if (t)
            text[t++] = '.';
        for (Py_ssize_t i = off + 1; i < next; i++) {
            unsigned c = dns[i];
            if (!plain_byte(c))
                return 0;
            text[t++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        off = next;
    }
    if (t == 0 || off + 5 > n)
        return 0;
    *qtype = RD16(dns + off + 1);
    *qclass = RD16(dns + off + 3);
    *qend = off + 5;
    *name = PyUnicode_DecodeASCII(text, t, NULL);
    return *name == NULL ? -1 : 1;
}

/* The answers of a response with one plain question ending at `qend`, when every
 * answer is A or AAAA, class IN, owned by a pointer to the question (0xC00C): three new
 * lists (data text, type names, ttls) in out[]. 1 found, 0 another shape (Python
 * decodes it), -1 error. */
static int simple_answers(const unsigned char *dns, Py_ssize_t n, Py_ssize_t qend,
                          PyObject *out[3])
{
    if (RD16(dns + 4) != 1)
        return 0;
    unsigned count = RD16(dns + 6);
    Py_ssize_t off = qend;
    for (unsigned i = 0; i < count; i++) { /* check the whole section first */
        if (off + 12 > n || dns[off] != 0xC0 || dns[off + 1] != 12)
            return 0;
        unsigned type = RD16(dns + off + 2), rclass = RD16(dns + off + 4);
        unsigned rdlen = RD16(dns + off + 10);
        if (rclass != 1 || !((type == 1 && rdlen == 4) || (type == 28 && rdlen == 16))
                || off + 12 + (Py_ssize_t)rdlen > n)
            return 0;
        off += 12 + rdlen;
    }
    out[0] = PyList_New(count);
    out[1] = PyList_New(count);
    out[2] = PyList_New(count);
    if (out[0] == NULL || out[1] == NULL || out[2] == NULL)
        goto fail;
    off = qend;
    for (unsigned i = 0; i < count; i++) {
        unsigned type = RD16(dns + off + 2);
        uint32_t ttl = (uint32_t)dns[off + 6] << 24 | (uint32_t)dns[off + 7] << 16
            | (uint32_t)dns[off + 8] << 8 | dns[off + 9];
        char text[INET6_ADDRSTRLEN];
        int af = type == 1 ? AF_INET : AF_INET6;
        if (inet_ntop(af, dns + off + 12, text, sizeof text) == NULL) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
        PyObject *a = PyUnicode_FromString(text), *l = PyLong_FromUnsignedLong(ttl);
        if (a == NULL || l == NULL) {
            Py_XDECREF(a);
            Py_XDECREF(l);
            goto fail;
        }
        PyList_SET_ITEM(out[0], i, a);
        PyList_SET_ITEM(out[1], i, Py_NewRef(type == 1 ? s_type_a : s_type_aaaa));
        PyList_SET_ITEM(out[2], i, l);
        off += 12 + (type == 1 ? 4 : 16);
    }
    return 1;
fail:
    for (int i = 0; i < 3; i++)
        Py_CLEAR(out[i]);
    return -1;
}

static int set_question(PyObject *row, PyObject *qname, unsigned qtype, unsigned qclass)
{
    PyObject *t = int16(qtype), *c = int16(qclass);
    if (t == NULL || c == NULL) {
        Py_XDECREF(t);
        Py_XDECREF(c);
        return -1;
    }
    put(row, R_QUERY, Py_NewRef(qname));
    put(row, R_QTYPE, t);
    put(row, R_QCLASS, c);
    return 0;
}

/* pairing.py, mirrored: WINDOW and the verdicts, and the entry of a key in
 * pairing.table, [query ts | None, response ts | None, row, complete]. */
#define WINDOW 10.0
enum { NEW, DUPLICATE, ANSWERS, JOINED };
enum { E_QUERY, E_RESPONSE, E_ROW, E_COMPLETE };

/* Pairing.query: the verdict (-1 on error); *row (borrowed) the row it concerns. */
/* The pairing table's entry for key in *e: 1 found, 0 none, -1 error. */
static int pair_entry(State *st, PyObject *key, PyObject **e)
{
    *e = PyDict_GetItemWithError(st->table, key);
    if (*e == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyList_Check(*e) || PyList_GET_SIZE(*e) != 4) {
        PyErr_SetString(PyExc_TypeError, "pairing.table: bad entry");
        return -1;
    }
    return 1;
}

static int pair_query(State *st, PyObject *key, double ts, PyObject **row)
{
    PyObject *e;
    int found = pair_entry(st, key, &e);
    if (found <= 0)
        return found < 0 ? -1 : NEW;
    PyObject *q = PyList_GET_ITEM(e, E_QUERY), *r = PyList_GET_ITEM(e, E_RESPONSE);
    double t;
    if (q == Py_None) {
        t = PyFloat_AsDouble(r);
        if (t == -1.0 && PyErr_Occurred())
            return -1;
        if (ts - t < WINDOW) {
            PyObject *when = PyFloat_FromDouble(ts);
            if (when == NULL || PyList_SetItem(e, E_QUERY, when) < 0)
                return -1;
            *row = PyList_GET_ITEM(e, E_ROW);
            return JOINED;
        }
        return NEW;
    }
    if (PyList_GET_ITEM(e, E_COMPLETE) == Py_True)
        return NEW;
    t = PyFloat_AsDouble(q);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (ts - t < WINDOW) {
        st->duplicates++;
        *row = PyList_GET_ITEM(e, E_ROW);
        return DUPLICATE;
    }
    return NEW;
}

/* Pairing.response: the verdict (-1 on error); *row (borrowed) the row it concerns. */
static int pair_response(State *st, PyObject *key, double ts, PyObject **row)
{
    PyObject *e;
    int found = pair_entry(st, key, &e);
    if (found <= 0)
        return found < 0 ? -1 : NEW;
    PyObject *q = PyList_GET_ITEM(e, E_QUERY), *r = PyList_GET_ITEM(e, E_RESPONSE);
    double t;
    if (r == Py_None) {
        t = PyFloat_AsDouble(q);
        if (t == -1.0 && PyErr_Occurred())
            return -1;
        if (ts - t < WINDOW) {
            PyObject *when = PyFloat_FromDouble(ts);
            if (when == NULL || PyList_SetItem(e, E_RESPONSE, when) < 0
                    || PyList_SetItem(e, E_COMPLETE, Py_NewRef(Py_True)) < 0)
                return -1;
            *row = PyList_GET_ITEM(e, E_ROW);
            return ANSWERS;
        }
        return NEW;
    }
    t = PyFloat_AsDouble(r);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (ts - t < WINDOW) {
        st->duplicates++;
        *row = PyList_GET_ITEM(e, E_ROW);
        return DUPLICATE;
    }
    return NEW;
}

/* Pairing.opened (a capture file's table keeps every transaction): `row`, new, is now
 * the transaction of `key` (its time, the row's ts, is the message's). */
static int pair_opened(State *st, PyObject *key, PyObject *row, int is_query)
{
    PyObject *when = Py_NewRef(PyList_GET_ITEM(row, R_TS)), *e = PyList_New(4);
    if (e == NULL) {
        Py_DECREF(when);
        return -1;
    }
    PyList_SET_ITEM(e, E_QUERY, is_query ? when : Py_NewRef(Py_None));
    PyList_SET_ITEM(e, E_RESPONSE, is_query ? Py_NewRef(Py_None) : when);
    PyList_SET_ITEM(e, E_ROW, Py_NewRef(row));
    PyList_SET_ITEM(e, E_COMPLETE, Py_NewRef(Py_False));
    PyObject_GC_UnTrack(e); /* floats, None, bools and a row: never a cycle */
    int rc = PyDict_SetItem(st->table, key, e);
    Py_DECREF(e);
    return rc;
}

/* Scan._message for a UDP message decoded here: `qname` (NULL when the question is
 * not wanted) and its type and class fill the question columns; `answers` (NULL when
 * not wanted) the answer columns of a response. */
static int message_fast(State *st, double ts, PyObject *src, unsigned sport, PyObject *dst,
                        unsigned dport, const unsigned char *dns, PyObject *qname,
                        unsigned qtype, unsigned qclass, PyObject **answers)
{
    unsigned tid = RD16(dns), bits = RD16(dns + 2);
    PyObject *sp = int16(sport), *dp = int16(dport);
    PyObject *t = int16(tid), *key = NULL, *row = NULL, *found = NULL;
    int rc = -1;
    double old;
    if (sp == NULL || dp == NULL || t == NULL)
        goto done;
    st->messages++;
    if (!(bits & 0x8000)) {
        st->queries++;
        key = PyTuple_Pack(6, s_udp, src, sp, dst, dp, t);
        if (key == NULL)
            goto done;
        PyObject_GC_UnTrack(key); /* atomic members only */
        PyObject *prev = NULL;
        int verdict = pair_query(st, key, ts, &prev);
        if (verdict < 0)
            goto done;
        if (verdict == JOINED) { /* its response came first: the row has it already */
            PyObject *zero = PyFloat_FromDouble(0.0);
            if (zero == NULL || PyList_SetItem(prev, R_RTT, zero) < 0
                    || PyList_SetItem(prev, R_STATUS, Py_NewRef(s_answered)) < 0)
                goto done;
        }
        if (verdict != NEW) {
            rc = 0;
            goto done;
        }
        PyObject *flags = PyLong_FromLong(bits);
        if (flags == NULL)
            goto done;
        row = new_row(ts, src, sp, dst, dp, t, flags, s_unanswered);
        Py_DECREF(flags);
        if (row != NULL && qname != NULL && set_question(row, qname, qtype, qclass) < 0)
            goto done;
        if (row == NULL || PyList_Append(st->rows, row) < 0
                || pair_opened(st, key, row, 1) < 0)
            goto done;
        rc = 0;
        goto done;
    }
    st->responses++;
    key = PyTuple_Pack(6, s_udp, dst, dp, src, sp, t);
    if (key == NULL)
        goto done;
    PyObject_GC_UnTrack(key);
    int verdict = pair_response(st, key, ts, &found);
    if (verdict < 0)
        goto done;
    if (verdict == DUPLICATE) {
        rc = 0;
        goto done;
    }
    if (verdict == NEW) {
        row = new_row(ts, dst, dp, src, sp, t, Py_None, s_response_only);
        if (row != NULL && qname != NULL && set_question(row, qname, qtype, qclass) < 0)
            goto done;
        if (row == NULL || PyList_Append(st->rows, row) < 0
                || pair_opened(st, key, row, 0) < 0)
            goto done;
    } else {
        row = Py_NewRef(found);
        if (row_ts(row, &old) < 0)
            goto done;
        double rtt = ts - old;
        PyObject *r = PyFloat_FromDouble(0.0 > rtt ? 0.0 : rtt);
        if (r == NULL)
            goto done;
        if (PyList_SetItem(row, R_RTT, r) < 0)
            goto done;
        if (PyList_SetItem(row, R_STATUS, Py_NewRef(s_answered)) < 0)
            goto done;
    }
    /* rcode and flags: the response's header */
    PyObject *rcode = int16(bits & 0xF), *flags = int16(bits);
    if (rcode == NULL || flags == NULL || PyList_SetItem(row, R_RCODE, rcode) < 0) {
        Py_XDECREF(flags);
        goto done;
    }
    if (PyList_SetItem(row, R_FLAGS, flags) < 0)
        goto done;
    if (answers != NULL) {
        for (int i = 0; i < 3; i++)
            if (PyList_SetItem(row, R_ANSWERS + i, Py_NewRef(answers[i])) < 0)
                goto done;
        /* every answer is an address: the name it answers for, as of this response */
        PyObject *query = PyList_GET_ITEM(row, R_QUERY);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(answers[0]); i++) {
            PyObject *when = PyFloat_FromDouble(ts);
            PyObject *v = when ? PyTuple_Pack(2, query, when) : NULL;
            Py_XDECREF(when);
            if (v == NULL || PyDict_SetItem(st->names, PyList_GET_ITEM(answers[0], i), v) < 0) {
                Py_XDECREF(v);
                goto done;
            }
            Py_DECREF(v);
        }
    }
    rc = 0;
done:
    Py_XDECREF(sp);
    Py_XDECREF(dp);
    Py_XDECREF(t);
    Py_XDECREF(key);
    Py_XDECREF(row);
    return rc;
}

/* One record: Scan.feed's loop body. */
static int frame(State *st, double ts, int lt, const unsigned char *f, Py_ssize_t n)
{
    unsigned et;
    Py_ssize_t off, u;
    if (lt == 1) {
        if (n < 14)
            goto malformed;
        et = RD16(f + 12);
        off = 14;
        while (et == 0x8100 || et == 0x88A8 || et == 0x9100 || et == 0x9200) {
            if (n < off + 4)
                goto malformed;
            et = RD16(f + off + 2);
            off += 4;
        }
    } else if (lt == 113 || lt == 276) {
        unsigned ptype, hatype;
        if (n < (lt == 113 ? 16 : 20))
            goto malformed;
        if (lt == 113) {
            ptype = RD16(f);
            hatype = RD16(f + 2);
            et = RD16(f + 14);
            off = 16;
        } else {
            et = RD16(f);
            hatype = RD16(f + 8);
            ptype = f[10];
            off = 20;
        }
        if (ptype == 4 && hatype == 772)
            return 0; /* loopback's outgoing copy; its incoming twin follows */
    } else if (lt == 101 || lt == 228 || lt == 229 || lt == 12 || lt == 14) {
        if (n < 1)
            goto malformed;
        et = (f[0] >> 4 == 4) ? 0x0800 : 0x86DD;
        off = 0;
    } else {
        goto general;
    }
    const unsigned char *src, *dst;
    Py_ssize_t alen;
    if (et == 0x0800) {
        if (n < off + 20 || (f[off] & 15) < 5)
            goto malformed;
        unsigned proto = f[off + 9];
        if (proto != 17 || (f[off + 6] & 0x1F) || f[off + 7]) {
            if (proto == 6)
                goto general;
            return 0;
        }
        src = f + off + 12;
        dst = f + off + 16;
        alen = 4;
        u = off + (f[off] & 15) * 4;
    } else if (et == 0x86DD) {
        if (n < off + 40)
            goto malformed;
        unsigned nh = f[off + 6];
        if (nh != 17) {
            if (nh == 6 || nh == 0 || nh == 43 || nh == 44 || nh == 60)
                goto general;
            return 0;
        }
        src = f + off + 8;
        dst = f + off + 24;
        alen = 16;
        u = off + 40;
    } else {
        return 0;
    }
    if (n < u + 8)
        goto malformed;
    unsigned sport = RD16(f + u), dport = RD16(f + u + 2);
    if (!port_in(st, sport) && !port_in(st, dport))
        return 0;
    Py_ssize_t end = u + (Py_ssize_t)RD16(f + u + 4);
    if (end > n)
        end = n;
    if (end - u < 20)
        goto malformed;
    PyObject *s = address(src, alen), *d = address(dst, alen);
    int rc = -1;
    if (s != NULL && d != NULL) {
        const unsigned char *dns = f + u + 8;
        Py_ssize_t dlen = end - u - 8;
        PyObject *qname = NULL, *answers[3] = {NULL, NULL, NULL};
        unsigned qtype = 0, qclass = 0;
        Py_ssize_t qend = 0;
        int response = dns[2] & 0x80, want_q = st->mode & 1, want_a = st->mode & 2;
        int plain = 1;
        if (response && want_a) {
            plain = plain_question(dns, dlen, &qname, &qtype, &qclass, &qend);
            if (plain > 0) {
                plain = simple_answers(dns, dlen, qend, answers);
                if (plain <= 0)
                    Py_CLEAR(qname);
            }
        } else if (want_q) {
            plain = plain_question(dns, dlen, &qname, &qtype, &qclass, &qend);
        }
        if (plain > 0) {
            rc = message_fast(st, ts, s, sport, d, dport, dns, qname, qtype, qclass,
                              answers[0] != NULL ? answers : NULL);
            Py_XDECREF(qname);
            for (int i = 0; i < 3; i++)
                Py_XDECREF(answers[i]);
        } else if (plain == 0) {
            PyObject *pts = PyFloat_FromDouble(ts), *sp = int16(sport), *dp = int16(dport);
            PyObject *msg = PyBytes_FromStringAndSize((const char *)dns, dlen);
            if (pts && sp && dp && msg) {
                PyObject *r = PyObject_CallMethodObjArgs(st->scan, s_message, pts, s, sp, d,
                                                         dp, s_udp, msg, Py_None, NULL);
                rc = r == NULL ? -1 : 0;
                Py_XDECREF(r);
            }
            Py_XDECREF(pts);
            Py_XDECREF(sp);
            Py_XDECREF(dp);
            Py_XDECREF(msg);
        }
    }
    Py_XDECREF(s);
    Py_XDECREF(d);
    return rc;
malformed:
    st->malformed++;
    return 0;
general: {
        PyObject *pts = PyFloat_FromDouble(ts), *plt = PyLong_FromLong(lt);
        PyObject *fr = PyBytes_FromStringAndSize((const char *)f, n), *r = NULL;
        if (pts && plt && fr)
            r = PyObject_CallMethodObjArgs(st->scan, s_general, pts, plt, fr, Py_None, NULL);
        Py_XDECREF(pts);
        Py_XDECREF(plt);
        Py_XDECREF(fr);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
}

static int add_counter(PyObject *scan, PyObject *name, long delta)
{
    if (delta == 0)
        return 0;
    PyObject *v = PyObject_GetAttr(scan, name);
    if (v == NULL)
        return -1;
    PyObject *d = PyLong_FromLong(delta), *sum = d ? PyNumber_Add(v, d) : NULL;
    Py_DECREF(v);
    Py_XDECREF(d);
    if (sum == NULL)
        return -1;
    int rc = PyObject_SetAttr(scan, name, sum);
    Py_DECREF(sum);
    return rc;
}

static PyObject *scan_pcap(PyObject *self, PyObject *args)
{
    (void)self;
    State st = {0};
    Py_buffer buf, ports;
    Py_ssize_t pos, records = 0;
    int be, extra, lt, mode;
    long long divisor;
    uint32_t bad = 0;
    if (!PyArg_ParseTuple(args, "Oy*npLiiy*i", &st.scan, &buf, &pos, &be, &divisor, &extra,
                          &lt, &ports, &mode))
        return NULL;
    PyObject *result = NULL;
    if (ports.len != 8192 || divisor <= 0 || extra < 0 || pos < 0 || mode < 0 || mode > 3) {
        PyErr_SetString(PyExc_ValueError, "scan_pcap: bad arguments");
        goto out;
    }
    st.ports = ports.buf;
    st.mode = mode;
    st.pairing = PyObject_GetAttr(st.scan, s_pairing);
    st.table = st.pairing ? PyObject_GetAttr(st.pairing, s_table) : NULL;
    st.rows = st.table ? PyObject_GetAttr(st.scan, s_rows) : NULL;
    st.names = st.rows ? PyObject_GetAttr(st.scan, s_names) : NULL;
    if (st.names == NULL)
        goto out;
    if (!PyDict_CheckExact(st.table) || !PyList_Check(st.rows) || !PyDict_Check(st.names)) {
        PyErr_SetString(PyExc_TypeError, "scan_pcap: scan state has the wrong types");
        goto out;
    }
    const unsigned char *p = buf.buf;
    Py_ssize_t len = buf.len, hlen = 16 + extra;
    int failed = 0;
    while (pos + hlen <= len) {
        uint32_t sec = rd32(p + pos, be), frac = rd32(p + pos + 4, be);
        uint32_t incl = rd32(p + pos + 8, be);
        if (incl > MAX_RECORD) {
            bad = incl;
            break;
        }
        if (pos + hlen + (Py_ssize_t)incl > len)
            break;
        double ts = (double)sec + (double)frac / (double)divisor;
        if (records == 0) {
            PyObject *first = PyObject_GetAttr(st.scan, s_first_ts);
            if (first == NULL) {
                failed = 1;
                break;
            }
            int unset = first == Py_None;
            Py_DECREF(first);
            if (unset) {
                PyObject *t = PyFloat_FromDouble(ts);
                if (t == NULL || PyObject_SetAttr(st.scan, s_first_ts, t) < 0) {
                    Py_XDECREF(t);
                    failed = 1;
                    break;
                }
                Py_DECREF(t);
            }
        }
        records++;
        if (frame(&st, ts, lt, p + pos + hlen, incl) < 0) {
            failed = 1;
            break;
        }
        pos += hlen + incl;
    }
    /* the counters change even when a callback failed: keep its exception */
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (add_counter(st.scan, s_messages, st.messages) < 0
            || add_counter(st.scan, s_queries, st.queries) < 0
            || add_counter(st.scan, s_responses, st.responses) < 0
            || add_counter(st.scan, s_malformed, st.malformed) < 0
            || add_counter(st.pairing, s_duplicates, st.duplicates) < 0) {
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        goto out;
    }
    PyErr_Restore(et, ev, tb);
    if (!failed)
        result = Py_BuildValue("nnk", pos, records, (unsigned long)bad);
out:
    Py_XDECREF(st.pairing);
    Py_XDECREF(st.table);
    Py_XDECREF(st.rows);
    Py_XDECREF(st.names);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&ports);
    return result;
}

/* ---- Live capture: the blocks of a TPACKET_V3 ring through the same frame() ----
 *
 * ring_scan(scan, ring, block, nblocks, block_size, portmap, mode, ifname, ifnames, marks,
 *           limit) -> (block, packets, errors, last_ts, blocks)
 *
 * `ring` is a packet socket's mmap'ed PACKET_RX_RING (TPACKET_V3, SOCK_DGRAM: each
 * packet starts at its network header). From block `block`, the blocks the kernel has
 * handed to user space (at most `limit` of them: the GIL is held meanwhile) are walked, each packet decoded by frame() (link type 101, raw
 * IP) into `scan` exactly as a capture file's records are (one decoder, one pairing
 * rule), and the block given back to the kernel. Loopback's outgoing copy is skipped
 * (its incoming twin follows). A row made from a packet gets the name of the interface
 * it was seen on (ifnames: index -> name, filled by calling ifname(index) on a miss).
 * `marks` gets (transport, src, sport, dst, dport, id, is_response) for each UDP
 * message the caller must see: a query sent by this host (outgoing, or on loopback) to
 * a DNS port, and every response (livescan.py attributes and names them); before a
 * TCP packet (decoded in Python) scan.local says whether it is local. A packet whose
 * Python callback failed is counted in errors and skipped: one bad packet never ends a
 * capture. Measured reason (benchmarks/bench_live.py): recvmsg and a Python decode per
 * packet cost 25 us a packet at 100,000 packets/s. */
#include <linux/if_packet.h>

#define LIVE_ARPHRD_LOOPBACK 772
static PyObject *s_local;

static int ring_mark(const State *st, PyObject *marks, const unsigned char *p, Py_ssize_t n,
                     int local, int *general)
{
    const unsigned char *src, *dst;
    Py_ssize_t alen, u;
    unsigned proto;
    *general = 0;
    if (n < 1)
        return 0;
    if (p[0] >> 4 == 4) {
        if (n < 20 || (p[0] & 15) < 5)
            return 0;
        proto = p[9];
        if (proto == 6)
            *general = 1;
        if (proto != 17 || (p[6] & 0x1F) || p[7])
            return 0;
        src = p + 12;
        dst = p + 16;
        alen = 4;
        u = (p[0] & 15) * 4;
    } else if (p[0] >> 4 == 6) {
        if (n < 40)
            return 0;
        proto = p[6];
        if (proto == 6 || proto == 0 || proto == 43 || proto == 44 || proto == 60)
            *general = 1;
        if (proto != 17)
            return 0;
        src = p + 8;
        dst = p + 24;
        alen = 16;
        u = 40;
    } else {
        return 0;
    }
    if (n < u + 20)
        return 0;
    unsigned sport = RD16(p + u), dport = RD16(p + u + 2);
    Py_ssize_t end = u + (Py_ssize_t)RD16(p + u + 4);
    if (end > n)
        end = n;
    if (end - u < 20)
        return 0;
    const unsigned char *dns = p + u + 8;
    int response = dns[2] & 0x80;
    if (response ? !port_in(st, sport) && !port_in(st, dport)
                 : !(local && port_in(st, dport)))
        return 0;
    PyObject *s = address(src, alen), *d = address(dst, alen);
    PyObject *sp = int16(sport), *dp = int16(dport), *t = int16(RD16(dns)), *m = NULL;
    if (s && d && sp && dp && t)
        m = PyTuple_Pack(7, s_udp, s, sp, d, dp, t, response ? Py_True : Py_False);
    Py_XDECREF(s);
    Py_XDECREF(d);
    Py_XDECREF(sp);
    Py_XDECREF(dp);
    Py_XDECREF(t);
    if (m == NULL)
        return -1;
    int rc = PyList_Append(marks, m);
    Py_DECREF(m);
    return rc;
}

/* The interface name of `index` (borrowed from ifnames), NULL on error. */
static PyObject *ring_ifname(PyObject *ifname, PyObject *ifnames, int index)
{
    PyObject *key = PyLong_FromLong(index);
    if (key == NULL)
        return NULL;
    PyObject *name = PyDict_GetItemWithError(ifnames, key);
    if (name == NULL && !PyErr_Occurred()) {
        PyObject *made = PyObject_CallOneArg(ifname, key);
        if (made != NULL && PyDict_SetItem(ifnames, key, made) == 0)
            name = made;
        Py_XDECREF(made); /* ifnames holds it */
    }
    Py_DECREF(key);
    return name;
}

static int ring_packet(State *st, const struct tpacket3_hdr *h, const unsigned char *data,
                       Py_ssize_t n, PyObject *ifname, PyObject *ifnames, PyObject *marks,
                       double *last)
{
    const struct sockaddr_ll *ll = (const void *)((const unsigned char *)h
                                                  + TPACKET_ALIGN(sizeof *h));
    int local = ll->sll_pkttype == PACKET_OUTGOING || ll->sll_hatype == LIVE_ARPHRD_LOOPBACK;
    int general;
    double ts = (double)h->tp_sec + (double)h->tp_nsec / 1e9;
    Py_ssize_t before = PyList_GET_SIZE(st->rows);
    if (ts > *last)
        *last = ts;
    if (ring_mark(st, marks, data, n, local, &general) < 0)
        return -1;
    if (general && PyObject_SetAttr(st->scan, s_local, local ? Py_True : Py_False) < 0)
        return -1;
    if (frame(st, ts, 101, data, n) < 0)
        return -1;
    Py_ssize_t after = PyList_GET_SIZE(st->rows);
    if (after == before)
        return 0;
    PyObject *name = ring_ifname(ifname, ifnames, ll->sll_ifindex);
    if (name == NULL)
        return -1;
    for (Py_ssize_t i = before; i < after; i++) {
        PyObject *row = PyList_GET_ITEM(st->rows, i);
        if (!PyList_Check(row) || PyList_GET_SIZE(row) != ROW_LEN) {
            PyErr_SetString(PyExc_TypeError, "ring_scan: bad row");
            return -1;
        }
        if (PyList_SetItem(row, R_IFACE, Py_NewRef(name)) < 0)
            return -1;
    }
    return 0;
}

static PyObject *ring_scan(PyObject *self, PyObject *args)
{
    (void)self;
    State st = {0};
    Py_buffer ring, ports;
    Py_ssize_t block, nblocks, bsize, blocks = 0, limit = -1;
    int mode;
    long packets = 0, errors = 0;
    double last = 0.0;
    PyObject *ifname, *ifnames, *marks, *result = NULL;
    if (!PyArg_ParseTuple(args, "Ow*nnny*iOO!O!|n", &st.scan, &ring, &block, &nblocks,
                          &bsize, &ports, &mode, &ifname, &PyDict_Type, &ifnames,
                          &PyList_Type, &marks, &limit))
        return NULL;
    if (limit < 0 || limit > nblocks)
        limit = nblocks;
    if (s_local == NULL && (s_local = PyUnicode_InternFromString("local")) == NULL)
        goto out;
    if (ports.len != 8192 || nblocks <= 0 || bsize < 64 || block < 0 || block >= nblocks
            || nblocks > ring.len / bsize || mode < 0 || mode > 3) {
        PyErr_SetString(PyExc_ValueError, "ring_scan: bad arguments");
        goto out;
    }
    st.ports = ports.buf;
    st.mode = mode;
    st.pairing = PyObject_GetAttr(st.scan, s_pairing);
    st.table = st.pairing ? PyObject_GetAttr(st.pairing, s_table) : NULL;
    st.rows = st.table ? PyObject_GetAttr(st.scan, s_rows) : NULL;
    st.names = st.rows ? PyObject_GetAttr(st.scan, s_names) : NULL;
    if (st.names == NULL)
        goto out;
    if (!PyDict_CheckExact(st.table) || !PyList_Check(st.rows) || !PyDict_Check(st.names)) {
        PyErr_SetString(PyExc_TypeError, "ring_scan: scan state has the wrong types");
        goto out;
    }
    while (blocks < limit) {
        unsigned char *b = (unsigned char *)ring.buf + block * bsize;
        struct tpacket_block_desc *bd = (void *)b;
        if (!(__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
            break;
        Py_ssize_t off = bd->hdr.bh1.offset_to_first_pkt;
        for (uint32_t i = 0; i < bd->hdr.bh1.num_pkts; i++) {
            if (off < (Py_ssize_t)sizeof *bd
                    || off + (Py_ssize_t)TPACKET3_HDRLEN > bsize)
                break; /* never past the block, whatever it says */
            const struct tpacket3_hdr *h = (const void *)(b + off);
            Py_ssize_t n = h->tp_snaplen;
            if (h->tp_net < TPACKET3_HDRLEN || off + h->tp_net + n > bsize)
                break;
            const struct sockaddr_ll *ll = (const void *)((const unsigned char *)h
                                                          + TPACKET_ALIGN(sizeof *h));
            if (!(ll->sll_pkttype == PACKET_OUTGOING
                  && ll->sll_hatype == LIVE_ARPHRD_LOOPBACK)) {
                packets++;
                if (ring_packet(&st, h, b + off + h->tp_net, n, ifname, ifnames, marks,
                                &last) < 0) {
                    errors++;
                    PyErr_Clear();
                }
            }
            if (h->tp_next_offset == 0)
                break;
            off += h->tp_next_offset;
        }
        __atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
        block = (block + 1) % nblocks;
        blocks++;
    }
    if (add_counter(st.scan, s_messages, st.messages) < 0
            || add_counter(st.scan, s_queries, st.queries) < 0
            || add_counter(st.scan, s_responses, st.responses) < 0
            || add_counter(st.scan, s_malformed, st.malformed) < 0
            || add_counter(st.pairing, s_duplicates, st.duplicates) < 0)
        goto out;
    result = Py_BuildValue("nlldn", block, packets, errors, last, blocks);
out:
    Py_XDECREF(st.pairing);
    Py_XDECREF(st.table);
    Py_XDECREF(st.rows);
    Py_XDECREF(st.names);
    PyBuffer_Release(&ring);
    PyBuffer_Release(&ports);
    return result;
}

static PyMethodDef methods[] = {
    {"scan_pcap", scan_pcap, METH_VARARGS,
     "scan_pcap(scan, buf, pos, big_endian, divisor, extra, linktype, portmap, mode)"
     " -> (pos, records, bad_length)"},
    {"ring_scan", ring_scan, METH_VARARGS,
     "ring_scan(scan, ring, block, nblocks, block_size, portmap, mode, ifname, ifnames,"
     " marks, limit) -> (block, packets, errors, last_ts, blocks)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cscan", "Compiled classic-pcap scan for fastscan.Scan.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cscan(void)
{
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_udp, "udp"}, {&s_unanswered, "unanswered"}, {&s_answered, "answered"},
        {&s_response_only, "response_only"}, {&s_pairing, "pairing"},
        {&s_table, "table"}, {&s_rows, "rows"}, {&s_general, "_general"},
        {&s_message, "_message"}, {&s_messages, "messages"}, {&s_queries, "queries"},
        {&s_responses, "responses"}, {&s_malformed, "malformed"},
        {&s_first_ts, "first_ts"}, {&s_type_a, "A"}, {&s_type_aaaa, "AAAA"},
        {&s_names, "names"}, {&s_duplicates, "duplicates"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
