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
 * in verdict_query/verdict_response below (tests/test_dns_policy.py holds all paths to
 * it). scan_pcap_threads and live capture (live_ring, live_packet: the end of this
 * file) use the same parse_frame and verdicts on C tables.
 *
 * Stops before the first incomplete record (pos says where; the caller reads more) or
 * at a record claiming more than 16 MiB (bad_length is that length, pos its offset).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#define MAX_RECORD (1u << 24)
#define ROW_LEN 18
enum { R_TS, R_CADDR, R_CPORT, R_SADDR, R_SPORT, R_TRANSPORT, R_TID, R_QUERY, R_QTYPE,
       R_QCLASS, R_RCODE, R_FLAGS, R_ANSWERS, R_RTT = 15, R_IFACE = 16, R_STATUS = 17 };

static PyObject *s_udp, *s_tcp, *s_unanswered, *s_answered, *s_response_only, *s_type_a, *s_type_aaaa;
static PyObject *s_names;
static PyObject *s_pairing, *s_table, *s_rows, *s_general, *s_message;
static PyObject *s_messages, *s_queries, *s_responses, *s_malformed, *s_first_ts;
static PyObject *s_duplicates, *s_ranges;

/* What a walk counts, added to the scan's (and its pairing's) counters at its end. */
typedef struct {
    long messages, queries, responses, malformed, duplicates;
} Counts;

typedef struct {
    PyObject *scan, *pairing, *table, *rows, *names;
    const unsigned char *ports; /* 65536-bit bitmap */
    int mode;
    Counts counts;
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

/* Bytes a name shows as themselves (dnswire._PLAIN without the separator): a table
 * (strchr per byte of every name was 5% of a live capture's thread). */
static unsigned char plain_bytes[256];

static void plain_init(void)
{
    for (unsigned c = 0; c < 256; c++)
        plain_bytes[c] = c > 0x20 && c < 0x7F && c != '.' && !strchr("\"().;\\@$", (int)c);
}

static inline int plain_byte(unsigned c)
{
    return plain_bytes[c];
}

/* The end of the first question when it is plain: no compression, at least one label,
 * only bytes that need no escaping (0 when it is not: Python decodes the message). No
 * Python object is touched: the threads of scan_pcap_threads call it. */
static Py_ssize_t question_end(const unsigned char *dns, Py_ssize_t n)
{
    Py_ssize_t off = 12, stop = n - 1 < 12 + 254 ? n - 1 : 12 + 254;
    if (n < 13 || RD16(dns + 4) == 0 || dns[off] == 0)
        return 0;
    while (dns[off] != 0) {
        unsigned ln = dns[off];
        Py_ssize_t next = off + 1 + ln;
        if (ln >= 64 || next > stop)
            return 0;
        for (Py_ssize_t i = off + 1; i < next; i++)
            if (!plain_byte(dns[i]))
                return 0;
        off = next;
    }
    return off + 5 > n ? 0 : off + 5;
}

/* Names repeat too: a direct-mapped cache of their str objects (one per row was a
 * third of the memory a live capture's row took; the kernel zeroing it, 0.2 us). */
static struct { uint64_t hash; PyObject *obj; } qnames[16384];

/* The str of a name's text (ASCII), through the cache. */
static PyObject *name_object(const char *text, Py_ssize_t t)
{
    uint64_t h = 1469598103934665603ull;
    for (Py_ssize_t i = 0; i < t; i++)
        h = (h ^ (unsigned char)text[i]) * 1099511628211ull;
    h ^= h >> 29;
    size_t slot = (size_t)h & (sizeof qnames / sizeof qnames[0] - 1);
    PyObject *o = qnames[slot].obj;
    if (o != NULL && qnames[slot].hash == h && PyUnicode_GET_LENGTH(o) == t
            && !memcmp(PyUnicode_1BYTE_DATA(o), text, (size_t)t))
        return Py_NewRef(o);
    o = PyUnicode_DecodeASCII(text, t, NULL);
    if (o != NULL) {
        Py_XSETREF(qnames[slot].obj, Py_NewRef(o));
        qnames[slot].hash = h;
    }
    return o;
}

/* The text of a plain question (question_end), lower-cased as dnswire.decode_dns gives
 * it, into text[256]: its length. */
static Py_ssize_t question_chars(const unsigned char *dns, char *text)
{
    Py_ssize_t t = 0;
    for (Py_ssize_t off = 12; dns[off] != 0; off += 1 + dns[off]) {
        if (t)
            text[t++] = '.';
        for (Py_ssize_t i = off + 1; i < off + 1 + dns[off]; i++) {
            unsigned c = dns[i];
            text[t++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
    }
    return t;
}

/* The str of a plain question ending at qend. */
static PyObject *question_text(const unsigned char *dns, Py_ssize_t qend)
{
    char text[256];
    (void)qend;
    return name_object(text, question_chars(dns, text));
}

/* The first question when it is plain (question_end); its text lower-cased as
 * dnswire.decode_dns gives it. Returns 1 (found), 0 (not plain: Python decodes the
 * message) or -1 (error). */
static int plain_question(const unsigned char *dns, Py_ssize_t n, PyObject **name,
                          unsigned *qtype, unsigned *qclass, Py_ssize_t *qend)
{
    Py_ssize_t end = question_end(dns, n);
    if (end == 0)
        return 0;
    *qtype = RD16(dns + end - 4);
    *qclass = RD16(dns + end - 2);
    *qend = end;
    *name = question_text(dns, end);
    return *name == NULL ? -1 : 1;
}

/* 1 when every answer of a response with one plain question ending at `qend` is A or
 * AAAA, class IN, owned by a pointer to the question (0xC00C); 0 another shape (Python
 * decodes it). No Python object is touched. */
static int answers_simple(const unsigned char *dns, Py_ssize_t n, Py_ssize_t qend)
{
    if (RD16(dns + 4) != 1)
        return 0;
    unsigned count = RD16(dns + 6);
    Py_ssize_t off = qend;
    for (unsigned i = 0; i < count; i++) {
        if (off + 12 > n || dns[off] != 0xC0 || dns[off + 1] != 12)
            return 0;
        unsigned type = RD16(dns + off + 2), rclass = RD16(dns + off + 4);
        unsigned rdlen = RD16(dns + off + 10);
        if (rclass != 1 || !((type == 1 && rdlen == 4) || (type == 28 && rdlen == 16))
                || off + 12 + (Py_ssize_t)rdlen > n)
            return 0;
        off += 12 + rdlen;
    }
    return 1;
}

/* The answers of such a response (answers_simple): three new lists (data text, type
 * names, ttls) in out[]. 1 found, 0 another shape, -1 error. */
static int simple_answers(const unsigned char *dns, Py_ssize_t n, Py_ssize_t qend,
                          PyObject *out[3])
{
    if (!answers_simple(dns, n, qend)) /* check the whole section first */
        return 0;
    unsigned count = RD16(dns + 6);
    Py_ssize_t off;
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

/* The rule itself, on a key's transaction: q and r the times of its query and response
 * (NAN: none), complete: a response came after the query. Every table below (the
 * Python one of scan_pcap, the C ones of scan_pcap_threads and of live capture) asks
 * these two. */
static inline int verdict_query(double q, double r, int complete, double ts)
{
    if (isnan(q))
        return ts - r < WINDOW ? JOINED : NEW;
    return !complete && ts - q < WINDOW ? DUPLICATE : NEW;
}

static inline int verdict_response(double q, double r, double ts)
{
    if (isnan(r))
        return ts - q < WINDOW ? ANSWERS : NEW;
    return ts - r < WINDOW ? DUPLICATE : NEW;
}

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

/* An entry's time (None: NAN); -1 with an exception on error. */
static int entry_time(PyObject *e, int i, double *out)
{
    PyObject *v = PyList_GET_ITEM(e, i);
    *out = v == Py_None ? NAN : PyFloat_AsDouble(v);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* Pairing.query/Pairing.response on pairing.table: the verdict (-1 on error); *row
 * (borrowed) the row it concerns. */
static int pair_message(State *st, PyObject *key, double ts, int is_query, PyObject **row)
{
    PyObject *e;
    double q, r;
    int found = pair_entry(st, key, &e);
    if (found <= 0)
        return found < 0 ? -1 : NEW;
    if (entry_time(e, E_QUERY, &q) < 0 || entry_time(e, E_RESPONSE, &r) < 0)
        return -1;
    int verdict = is_query ? verdict_query(q, r, PyList_GET_ITEM(e, E_COMPLETE) == Py_True, ts)
                           : verdict_response(q, r, ts);
    if (verdict == NEW)
        return NEW;
    *row = PyList_GET_ITEM(e, E_ROW);
    if (verdict == DUPLICATE) {
        st->counts.duplicates++;
        return DUPLICATE;
    }
    PyObject *when = PyFloat_FromDouble(ts);
    if (when == NULL || PyList_SetItem(e, is_query ? E_QUERY : E_RESPONSE, when) < 0)
        return -1;
    if (verdict == ANSWERS && PyList_SetItem(e, E_COMPLETE, Py_NewRef(Py_True)) < 0)
        return -1;
    return verdict;
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
    st->counts.messages++;
    if (!(bits & 0x8000)) {
        st->counts.queries++;
        key = PyTuple_Pack(6, s_udp, src, sp, dst, dp, t);
        if (key == NULL)
            goto done;
        PyObject_GC_UnTrack(key); /* atomic members only */
        PyObject *prev = NULL;
        int verdict = pair_message(st, key, ts, 1, &prev);
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
    st->counts.responses++;
    key = PyTuple_Pack(6, s_udp, dst, dp, src, sp, t);
    if (key == NULL)
        goto done;
    PyObject_GC_UnTrack(key);
    int verdict = pair_message(st, key, ts, 0, &found);
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

/* What parse_frame found in a record. */
enum { P_SKIP, P_MALFORMED, P_GENERAL, P_MESSAGE };

/* A DNS message's place in a record (or a record for the general decoder). */
typedef struct {
    const unsigned char *src, *dst, *dns;
    Py_ssize_t alen, dlen;
    unsigned sport, dport;
} Found;

/* Scan.feed's loop body without Python: link, IP and UDP headers of one record. No
 * Python object is touched (the threads of scan_pcap_threads call it). */
static int parse_frame(int lt, const unsigned char *f, Py_ssize_t n,
                       const unsigned char *ports, Found *out)
{
    unsigned et;
    Py_ssize_t off, u;
    if (lt == 1) {
        if (n < 14)
            return P_MALFORMED;
        et = RD16(f + 12);
        off = 14;
        while (et == 0x8100 || et == 0x88A8 || et == 0x9100 || et == 0x9200) {
            if (n < off + 4)
                return P_MALFORMED;
            et = RD16(f + off + 2);
            off += 4;
        }
    } else if (lt == 113 || lt == 276) {
        unsigned ptype, hatype;
        if (n < (lt == 113 ? 16 : 20))
            return P_MALFORMED;
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
            return P_SKIP; /* loopback's outgoing copy; its incoming twin follows */
    } else if (lt == 101 || lt == 228 || lt == 229 || lt == 12 || lt == 14) {
        if (n < 1)
            return P_MALFORMED;
        et = (f[0] >> 4 == 4) ? 0x0800 : 0x86DD;
        off = 0;
    } else {
        return P_GENERAL;
    }
    if (et == 0x0800) {
        if (n < off + 20 || (f[off] & 15) < 5)
            return P_MALFORMED;
        unsigned proto = f[off + 9];
        if (proto != 17 || (f[off + 6] & 0x1F) || f[off + 7])
            return proto == 6 ? P_GENERAL : P_SKIP;
        out->src = f + off + 12;
        out->dst = f + off + 16;
        out->alen = 4;
        u = off + (f[off] & 15) * 4;
    } else if (et == 0x86DD) {
        if (n < off + 40)
            return P_MALFORMED;
        unsigned nh = f[off + 6];
        if (nh != 17)
            return (nh == 6 || nh == 0 || nh == 43 || nh == 44 || nh == 60)
                ? P_GENERAL : P_SKIP;
        out->src = f + off + 8;
        out->dst = f + off + 24;
        out->alen = 16;
        u = off + 40;
    } else {
        return P_SKIP;
    }
    if (n < u + 8)
        return P_MALFORMED;
    unsigned sport = RD16(f + u), dport = RD16(f + u + 2);
    if (!(ports[sport >> 3] >> (sport & 7) & 1) && !(ports[dport >> 3] >> (dport & 7) & 1))
        return P_SKIP;
    Py_ssize_t end = u + (Py_ssize_t)RD16(f + u + 4);
    if (end > n)
        end = n;
    if (end - u < 20)
        return P_MALFORMED;
    out->sport = sport;
    out->dport = dport;
    out->dns = f + u + 8;
    out->dlen = end - u - 8;
    return P_MESSAGE;
}

/* One record: Scan.feed's loop body. */
static int frame(State *st, double ts, int lt, const unsigned char *f, Py_ssize_t n)
{
    Found m;
    switch (parse_frame(lt, f, n, st->ports, &m)) {
    case P_SKIP:
        return 0;
    case P_MALFORMED:
        st->counts.malformed++;
        return 0;
    case P_GENERAL: {
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
    unsigned sport = m.sport, dport = m.dport;
    PyObject *s = address(m.src, m.alen), *d = address(m.dst, m.alen);
    int rc = -1;
    if (s != NULL && d != NULL) {
        const unsigned char *dns = m.dns;
        Py_ssize_t dlen = m.dlen;
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

/* Add a walk's counts to scan.messages, ... and pairing.duplicates; an exception a
 * callback left is kept (the counters change even when the walk failed). */
static int flush_counts(PyObject *scan, PyObject *pairing, const Counts *c)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (add_counter(scan, s_messages, c->messages) < 0
            || add_counter(scan, s_queries, c->queries) < 0
            || add_counter(scan, s_responses, c->responses) < 0
            || add_counter(scan, s_malformed, c->malformed) < 0
            || add_counter(pairing, s_duplicates, c->duplicates) < 0) {
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        return -1;
    }
    PyErr_Restore(et, ev, tb);
    return 0;
}

/* The State of a walk over st->scan (set by the caller): its pairing table, rows and
 * names, checked. -1 on error (state_release still due). */
static int state_from_scan(State *st, const unsigned char *ports, int mode)
{
    st->ports = ports;
    st->mode = mode;
    st->pairing = PyObject_GetAttr(st->scan, s_pairing);
    st->table = st->pairing ? PyObject_GetAttr(st->pairing, s_table) : NULL;
    st->rows = st->table ? PyObject_GetAttr(st->scan, s_rows) : NULL;
    st->names = st->rows ? PyObject_GetAttr(st->scan, s_names) : NULL;
    if (st->names == NULL)
        return -1;
    if (!PyDict_CheckExact(st->table) || !PyList_Check(st->rows) || !PyDict_Check(st->names)) {
        PyErr_SetString(PyExc_TypeError, "scan state has the wrong types");
        return -1;
    }
    return 0;
}

static void state_release(State *st)
{
    Py_CLEAR(st->pairing);
    Py_CLEAR(st->table);
    Py_CLEAR(st->rows);
    Py_CLEAR(st->names);
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
    if (state_from_scan(&st, ports.buf, mode) < 0)
        goto out;
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
    if (flush_counts(st.scan, st.pairing, &st.counts) < 0)
        goto out;
    if (!failed)
        result = Py_BuildValue("nnk", pos, records, (unsigned long)bad);
out:
    state_release(&st);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&ports);
    return result;
}

/* ---- scan_pcap_threads: the same scan, its records parsed on several threads ----
 *
 * scan_pcap walks a buffer holding the GIL and keeps each transaction as a Python list
 * and each pairing entry as a dict item: 0.12 s of the 0.49 s a 200,000-packet file's
 * count(*) took. Here the records of a buffer are split into ranges parsed in parallel
 * with the GIL released (parse_frame, question_end, answers_simple, the key's hash)
 * into Msg arrays; then, holding the GIL, the messages of every range are paired in
 * file order (the rule of pairing.py, on a C hash table: a query in one range answered
 * in the next pairs as in one walk) into Txn structs, which Python objects only appear
 * in for the wanted columns (pairs_columns). Frames for the general decoder and
 * messages this file does not decode go to Python as in scan_pcap
 * (Scan._general_messages, Scan._decode). tests/test_fastscan.py compares it with
 * scan_pcap and the pure-Python scan, split at every record. */
#include <pthread.h>
#include <sys/mman.h>

typedef struct {
    double ts;
    const unsigned char *src, *dst, *dns;
    uint64_t hash;
    uint32_t dlen;
    uint16_t sport, dport, qend;
    uint8_t kind, alen, tcp, plain; /* kind: P_MESSAGE or P_GENERAL (dns: the frame) */
} Msg;

typedef struct {
    const unsigned char *p, *ports;
    Py_ssize_t pos, end, hlen;
    int be, lt, mode;
    double divisor;
    Msg *msgs;
    size_t n, cap;
    long malformed;
    int oom;
} Range;

enum { T_UNANSWERED, T_ANSWERED, T_RESPONSE_ONLY };

typedef struct {
    double ts, rtt; /* rtt NAN: none */
    unsigned char caddr[16], saddr[16];
    uint16_t cport, sport, tid;
    uint8_t alen, tcp, status;
    int32_t qtype, qclass, rcode, flags; /* -1: none */
    PyObject *qname, *ans[3];            /* owned; NULL: none */
} Txn;

static void txn_clear(Txn *t)
{
    Py_CLEAR(t->qname);
    for (int j = 0; j < 3; j++)
        Py_CLEAR(t->ans[j]);
}

typedef struct {
    uint64_t hash;
    double q, r; /* NAN: none */
    uint32_t txn;
    uint8_t used, complete;
} Entry;

#define MAX_THREADS 16

typedef struct {
    int mode;
    Msg *msgs[MAX_THREADS]; /* each range's messages, kept for the next buffer */
    size_t msgcap[MAX_THREADS];
    Txn *txns;
    size_t ntxn, captxn;
    Entry *table;
    size_t cap; /* a power of two; at most half used */
    size_t used;
} Pairs;

#define PAIRS_CAPSULE "netsql.capture._cscan.Pairs"

/* The arrays of a scan reach tens of MB, each page touched once: huge pages where the
 * kernel gives them on request (transparent_hugepage "madvise") spare most of the page
 * faults, which took half the CPU time of a 21 MB file's scan. */
static void *huge(void *p, size_t size)
{
    if (p != NULL && size >= (4u << 20)) {
        uintptr_t from = ((uintptr_t)p + (2u << 20) - 1) & ~(uintptr_t)((2u << 20) - 1);
        uintptr_t to = ((uintptr_t)p + size) & ~(uintptr_t)((2u << 20) - 1);
        if (to > from)
            madvise((void *)from, to - from, MADV_HUGEPAGE);
    }
    return p;
}

static uint64_t key_hash(int tcp, const unsigned char *c, unsigned cport,
                         const unsigned char *s, unsigned sport, unsigned tid, int alen)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(tcp << 8 | alen);
    for (int i = 0; i < alen; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    for (int i = 0; i < alen; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    h ^= (uint64_t)cport << 32 | (uint64_t)sport << 16 | tid;
    h = (h ^ h >> 33) * 0xff51afd7ed558ccdull; /* murmur3's finaliser: every bit of the */
    h = (h ^ h >> 33) * 0xc4ceb9fe1a85ec53ull; /* key moves the low bits the table uses */
    return h ^ h >> 33;
}

/* The decoding a message needs here, decided as scan_pcap's frame() does: bit 1 the
 * question is plain (qend), bit 2 so are the answers; 0: Python decodes it. */
static void classify(Msg *m, int mode)
{
    const unsigned char *dns = m->dns;
    Py_ssize_t n = m->dlen, qend;
    int response = dns[2] & 0x80;
    m->plain = 3;
    m->qend = 0;
    if ((response && (mode & 2)) || (mode & 1)) {
        qend = question_end(dns, n);
        m->qend = (uint16_t)qend;
        m->plain = qend ? 1 : 0;
        if (qend && response && (mode & 2))
            m->plain = answers_simple(dns, n, qend) ? 3 : 0;
    }
    unsigned tid = RD16(dns);
    m->hash = response ? key_hash(m->tcp, m->dst, m->dport, m->src, m->sport, tid, m->alen)
                       : key_hash(m->tcp, m->src, m->sport, m->dst, m->dport, tid, m->alen);
}

static void *parse_range(void *arg)
{
    Range *r = arg;
    const unsigned char *p = r->p;
    size_t want = (size_t)(r->end - r->pos) / 64 + 16; /* a DNS record takes 70 bytes+ */
    if (r->cap < want) {
        Msg *more = huge(realloc(r->msgs, want * sizeof(Msg)), want * sizeof(Msg));
        if (more == NULL) {
            r->oom = 1;
            return NULL;
        }
        r->msgs = more;
        r->cap = want;
    }
    for (Py_ssize_t pos = r->pos; pos < r->end;) {
        uint32_t sec = rd32(p + pos, r->be), frac = rd32(p + pos + 4, r->be);
        uint32_t incl = rd32(p + pos + 8, r->be);
        const unsigned char *f = p + pos + r->hlen;
        pos += r->hlen + incl;
        Found fd;
        int kind = parse_frame(r->lt, f, incl, r->ports, &fd);
        if (kind == P_SKIP)
            continue;
        if (kind == P_MALFORMED) {
            r->malformed++;
            continue;
        }
        if (r->n == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 1024;
            Msg *more = huge(realloc(r->msgs, cap * sizeof(Msg)), cap * sizeof(Msg));
            if (more == NULL) {
                r->oom = 1;
                return NULL;
            }
            r->msgs = more;
            r->cap = cap;
        }
        Msg *m = &r->msgs[r->n++];
        m->ts = (double)sec + (double)frac / r->divisor;
        m->kind = (uint8_t)kind;
        m->tcp = 0;
        if (kind == P_GENERAL) {
            m->dns = f;
            m->dlen = incl;
            continue;
        }
        m->src = fd.src;
        m->dst = fd.dst;
        m->alen = (uint8_t)fd.alen;
        m->sport = (uint16_t)fd.sport;
        m->dport = (uint16_t)fd.dport;
        m->dns = fd.dns;
        m->dlen = (uint32_t)fd.dlen;
        classify(m, r->mode);
    }
    return NULL;
}

static void pairs_free(Pairs *ps)
{
    for (size_t i = 0; i < ps->ntxn; i++)
        txn_clear(&ps->txns[i]);
    for (int i = 0; i < MAX_THREADS; i++)
        free(ps->msgs[i]);
    free(ps->txns);
    free(ps->table);
    free(ps);
}

static void pairs_destroy(PyObject *capsule)
{
    Pairs *ps = PyCapsule_GetPointer(capsule, PAIRS_CAPSULE);
    if (ps != NULL)
        pairs_free(ps);
}

static PyObject *pairs_new(PyObject *self, PyObject *args)
{
    (void)self;
    int mode;
    if (!PyArg_ParseTuple(args, "i", &mode))
        return NULL;
    Pairs *ps = calloc(1, sizeof(Pairs));
    if (ps == NULL)
        return PyErr_NoMemory();
    ps->mode = mode;
    ps->cap = 1024;
    ps->table = calloc(ps->cap, sizeof(Entry));
    if (ps->table == NULL) {
        free(ps);
        return PyErr_NoMemory();
    }
    PyObject *cap = PyCapsule_New(ps, PAIRS_CAPSULE, pairs_destroy);
    if (cap == NULL)
        pairs_free(ps);
    return cap;
}

static int txn_is(const Txn *t, int tcp, const unsigned char *c, unsigned cport,
                  const unsigned char *s, unsigned sport, unsigned tid, int alen)
{
    return t->tcp == tcp && t->alen == alen && t->cport == cport && t->sport == sport
        && t->tid == tid && !memcmp(t->caddr, c, alen) && !memcmp(t->saddr, s, alen);
}

/* The slot of the key (client c, server s): its entry, or the empty slot for it. */
static Entry *slot(Pairs *ps, uint64_t h, int tcp, const unsigned char *c, unsigned cport,
                   const unsigned char *s, unsigned sport, unsigned tid, int alen)
{
    size_t mask = ps->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        Entry *e = &ps->table[i];
        if (!e->used || (e->hash == h && txn_is(&ps->txns[e->txn], tcp, c, cport, s, sport,
                                                tid, alen)))
            return e;
    }
}

static int grow_table(Pairs *ps)
{
    size_t cap = ps->cap * 2;
    Entry *t = huge(calloc(cap, sizeof(Entry)), cap * sizeof(Entry));
    if (t == NULL)
        return -1;
    for (size_t i = 0; i < ps->cap; i++) {
        if (!ps->table[i].used)
            continue;
        size_t j = (size_t)ps->table[i].hash & (cap - 1);
        while (t[j].used)
            j = (j + 1) & (cap - 1);
        t[j] = ps->table[i];
    }
    free(ps->table);
    ps->table = t;
    ps->cap = cap;
    return 0;
}

/* What one message's columns need decoded: the question (q: text or NULL, type, class)
 * and, with answers != NULL, the answer lists. 1 decoded, 0 not a DNS message (as
 * dnswire.decode_dns says), -1 error. */
static int decode(PyObject *scan, const Msg *m, PyObject **q, int32_t *qt, int32_t *qc,
                  PyObject **answers)
{
    const unsigned char *dns = m->dns;
    if (m->plain & 1 && (answers == NULL || m->plain & 2)) {
        *qt = RD16(dns + m->qend - 4);
        *qc = RD16(dns + m->qend - 2);
        *q = question_text(dns, m->qend);
        if (*q == NULL)
            return -1;
        if (answers != NULL && simple_answers(dns, m->dlen, m->qend, answers) < 0) {
            Py_CLEAR(*q);
            return -1;
        }
        return 1;
    }
    PyObject *raw = PyBytes_FromStringAndSize((const char *)dns, m->dlen);
    PyObject *r = raw ? PyObject_CallMethod(scan, "_decode", "O", raw) : NULL;
    Py_XDECREF(raw);
    if (r == NULL)
        return -1;
    if (r == Py_None) {
        Py_DECREF(r);
        return 0;
    }
    /* (qname, qtype, qclass, answers, types, ttls) */
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 6) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_TypeError, "Scan._decode: bad result");
        return -1;
    }
    *q = Py_NewRef(PyTuple_GET_ITEM(r, 0));
    *qt = (int32_t)PyLong_AsLong(PyTuple_GET_ITEM(r, 1));
    *qc = (int32_t)PyLong_AsLong(PyTuple_GET_ITEM(r, 2));
    if (answers != NULL)
        for (int i = 0; i < 3; i++)
            answers[i] = Py_NewRef(PyTuple_GET_ITEM(r, 3 + i));
    Py_DECREF(r);
    return PyErr_Occurred() ? -1 : 1;
}

typedef struct {
    PyObject *scan, *names;
    Pairs *ps;
    Counts counts;
} Walk;

/* A new transaction of the key (client c, server s) in the empty or stale slot e. */
static Txn *open_txn(Walk *w, Entry **e, uint64_t h, double ts, int tcp,
                     const unsigned char *c, unsigned cport, const unsigned char *s,
                     unsigned sport, unsigned tid, int alen, int is_query)
{
    Pairs *ps = w->ps;
    if (ps->ntxn == ps->captxn) {
        size_t cap = ps->captxn ? ps->captxn * 2 : 1024;
        Txn *more = huge(realloc(ps->txns, cap * sizeof(Txn)), cap * sizeof(Txn));
        if (more == NULL)
            return NULL;
        ps->txns = more;
        ps->captxn = cap;
    }
    Txn *t = &ps->txns[ps->ntxn];
    memset(t, 0, sizeof *t);
    t->ts = ts;
    t->rtt = NAN;
    memcpy(t->caddr, c, alen);
    memcpy(t->saddr, s, alen);
    t->cport = (uint16_t)cport;
    t->sport = (uint16_t)sport;
    t->tid = (uint16_t)tid;
    t->alen = (uint8_t)alen;
    t->tcp = (uint8_t)tcp;
    t->qtype = t->qclass = t->rcode = t->flags = -1;
    t->status = is_query ? T_UNANSWERED : T_RESPONSE_ONLY;
    if (!(*e)->used)
        ps->used++;
    (*e)->used = 1;
    (*e)->hash = h;
    (*e)->txn = (uint32_t)ps->ntxn++;
    (*e)->q = is_query ? ts : NAN;
    (*e)->r = is_query ? NAN : ts;
    (*e)->complete = 0;
    return t;
}

/* Scan._message for one message, paired on the C table (pairing.py's rule). */
static int pair_msg(Walk *w, const Msg *m)
{
    Pairs *ps = w->ps;
    const unsigned char *dns = m->dns;
    unsigned tid = RD16(dns), bits = RD16(dns + 2);
    int need_q = ps->mode & 1, need_r = ps->mode & 2;
    double ts = m->ts;
    if (ps->used * 2 >= ps->cap && grow_table(ps) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    w->counts.messages++;
    if (!(bits & 0x8000)) {
        w->counts.queries++;
        Entry *e = slot(ps, m->hash, m->tcp, m->src, m->sport, m->dst, m->dport, tid,
                        m->alen);
        int verdict = e->used ? verdict_query(e->q, e->r, e->complete, ts) : NEW;
        if (verdict == JOINED) { /* its response came first: the row has it already */
            e->q = ts;
            ps->txns[e->txn].status = T_ANSWERED;
            ps->txns[e->txn].rtt = 0.0;
            return 0;
        }
        if (verdict == DUPLICATE) {
            w->counts.duplicates++;
            return 0;
        }
        PyObject *q = NULL;
        int32_t qt = -1, qc = -1;
        if (need_q) {
            int ok = decode(w->scan, m, &q, &qt, &qc, NULL);
            if (ok < 0)
                return -1;
            if (ok == 0) {
                w->counts.malformed++;
                return 0;
            }
        }
        Txn *t = open_txn(w, &e, m->hash, ts, m->tcp, m->src, m->sport, m->dst, m->dport,
                          tid, m->alen, 1);
        if (t == NULL) {
            Py_XDECREF(q);
            PyErr_NoMemory();
            return -1;
        }
        t->qname = q;
        t->qtype = qt;
        t->qclass = qc;
        t->flags = (int32_t)bits;
        return 0;
    }
    w->counts.responses++;
    Entry *e = slot(ps, m->hash, m->tcp, m->dst, m->dport, m->src, m->sport, tid, m->alen);
    Txn *t = NULL;
    int verdict = e->used ? verdict_response(e->q, e->r, ts) : NEW;
    if (verdict == DUPLICATE) {
        w->counts.duplicates++;
        return 0;
    }
    if (verdict == ANSWERS) {
        e->r = ts;
        e->complete = 1;
        t = &ps->txns[e->txn];
        t->status = T_ANSWERED;
        t->rtt = 0.0 > ts - t->ts ? 0.0 : ts - t->ts; /* max(ts - row ts, 0) */
    }
    PyObject *q = NULL, *answers[3] = {NULL, NULL, NULL};
    int32_t qt = -1, qc = -1;
    int ok = 1;
    if (need_r || (t == NULL && need_q)) {
        ok = decode(w->scan, m, &q, &qt, &qc, need_r ? answers : NULL);
        if (ok < 0)
            return -1;
    }
    if (t == NULL) {
        t = open_txn(w, &e, m->hash, ts, m->tcp, m->dst, m->dport, m->src, m->sport, tid,
                     m->alen, 0);
        if (t == NULL) {
            Py_XDECREF(q);
            for (int i = 0; i < 3; i++)
                Py_XDECREF(answers[i]);
            PyErr_NoMemory();
            return -1;
        }
        t->qname = q;
        t->qtype = qt;
        t->qclass = qc;
        q = NULL;
    }
    Py_XDECREF(q);
    t->rcode = (int32_t)(bits & 0xF); /* rcode and flags: the response's header */
    t->flags = (int32_t)bits;
    if (!need_r)
        return 0;
    if (ok == 0) {
        w->counts.malformed++;
        return 0;
    }
    for (int i = 0; i < 3; i++)
        t->ans[i] = answers[i];
    /* every address answered: the name it answers for, as of this response */
    PyObject *data = answers[0], *types = answers[1];
    if (!PyList_Check(data) || !PyList_Check(types)
            || PyList_GET_SIZE(data) != PyList_GET_SIZE(types)) {
        PyErr_SetString(PyExc_TypeError, "Scan._decode: bad answers");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(data); i++) {
        PyObject *type = PyList_GET_ITEM(types, i);
        if (type != s_type_a && type != s_type_aaaa) {
            int a = PyUnicode_Check(type) ? PyUnicode_CompareWithASCIIString(type, "A") : 1;
            int b = PyUnicode_Check(type) ? PyUnicode_CompareWithASCIIString(type, "AAAA") : 1;
            if (a != 0 && b != 0)
                continue;
        }
        PyObject *when = PyFloat_FromDouble(ts);
        PyObject *v = when ? PyTuple_Pack(2, t->qname ? t->qname : Py_None, when) : NULL;
        Py_XDECREF(when);
        if (v == NULL || PyDict_SetItem(w->names, PyList_GET_ITEM(data, i), v) < 0) {
            Py_XDECREF(v);
            return -1;
        }
        Py_DECREF(v);
    }
    return 0;
}

/* A frame for the general decoder: its messages (Scan._general_messages), paired. */
static int pair_general(Walk *w, const Msg *g, int lt)
{
    PyObject *fr = PyBytes_FromStringAndSize((const char *)g->dns, g->dlen);
    PyObject *got = fr ? PyObject_CallMethod(w->scan, "_general_messages", "dOiO", g->ts,
                                             fr, lt, Py_None) : NULL;
    Py_XDECREF(fr);
    if (got == NULL)
        return -1;
    PyObject *seq = PySequence_Fast(got, "Scan._general_messages: not a sequence");
    Py_DECREF(got);
    if (seq == NULL)
        return -1;
    int rc = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq) && rc == 0; i++) {
        /* (source address bytes, port, destination address bytes, port, tcp, payload) */
        PyObject *t = PySequence_Fast_GET_ITEM(seq, i);
        Msg m = {0};
        const char *src, *dst, *dns;
        Py_ssize_t slen, dlen, n;
        int sport, dport, tcp;
        if (!PyArg_ParseTuple(t, "y#iy#ipy#", &src, &slen, &sport, &dst, &dlen, &dport,
                              &tcp, &dns, &n)) {
            rc = -1;
            break;
        }
        if (slen != dlen || (slen != 4 && slen != 16)) {
            PyErr_SetString(PyExc_ValueError, "Scan._general_messages: bad address");
            rc = -1;
            break;
        }
        if (n < 12) {
            w->counts.malformed++;
            continue;
        }
        m.ts = g->ts;
        m.src = (const unsigned char *)src;
        m.dst = (const unsigned char *)dst;
        m.dns = (const unsigned char *)dns;
        m.alen = (uint8_t)slen;
        m.dlen = (uint32_t)n;
        m.sport = (uint16_t)sport;
        m.dport = (uint16_t)dport;
        m.tcp = (uint8_t)tcp;
        m.kind = P_MESSAGE;
        classify(&m, w->ps->mode);
        rc = pair_msg(w, &m);
    }
    Py_DECREF(seq);
    return rc;
}

/* Complete records of buf from pos: where they end, how many, a length too long to be
 * real (0 if none), and the starts of `parts` ranges of about equal size. */
static Py_ssize_t walk_records(const unsigned char *p, Py_ssize_t pos, Py_ssize_t len,
                               Py_ssize_t hlen, int be, int parts, Py_ssize_t starts[],
                               Py_ssize_t *records, uint32_t *bad)
{
    Py_ssize_t size = len - pos, begin = pos;
    int next = 1;
    starts[0] = pos;
    *records = 0;
    *bad = 0;
    while (pos + hlen <= len) {
        uint32_t incl = rd32(p + pos + 8, be);
        if (incl > MAX_RECORD) {
            *bad = incl;
            break;
        }
        if (pos + hlen + (Py_ssize_t)incl > len)
            break;
        if (next < parts && pos - begin >= size / parts * next)
            starts[next++] = pos;
        ++*records;
        pos += hlen + incl;
    }
    while (next < parts)
        starts[next++] = pos;
    return pos;
}

static PyObject *scan_pcap_threads(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *scan, *capsule;
    Py_buffer buf, ports;
    Py_ssize_t pos, records = 0, min_range;
    int be, extra, lt, threads;
    long long divisor;
    uint32_t bad = 0;
    if (!PyArg_ParseTuple(args, "OOy*npLiiy*in", &scan, &capsule, &buf, &pos, &be,
                          &divisor, &extra, &lt, &ports, &threads, &min_range))
        return NULL;
    PyObject *result = NULL, *pairing = NULL, *names = NULL;
    Range ranges[MAX_THREADS];
    int parts = 0;
    Pairs *ps = PyCapsule_GetPointer(capsule, PAIRS_CAPSULE);
    if (ps == NULL)
        goto out;
    if (ports.len != 8192 || divisor <= 0 || extra < 0 || pos < 0 || threads < 1
            || min_range < 1 || pos > buf.len) {
        PyErr_SetString(PyExc_ValueError, "scan_pcap_threads: bad arguments");
        goto out;
    }
    names = PyObject_GetAttr(scan, s_names);
    pairing = names ? PyObject_GetAttr(scan, s_pairing) : NULL;
    if (pairing == NULL)
        goto out;
    if (!PyDict_Check(names)) {
        PyErr_SetString(PyExc_TypeError, "scan_pcap_threads: scan.names is not a dict");
        goto out;
    }
    const unsigned char *p = buf.buf;
    Py_ssize_t hlen = 16 + extra, starts[MAX_THREADS + 1], end;
    parts = threads > MAX_THREADS ? MAX_THREADS : threads;
    if ((buf.len - pos) / min_range < parts)
        parts = (int)((buf.len - pos) / min_range) > 1 ? (int)((buf.len - pos) / min_range) : 1;
    memset(ranges, 0, sizeof ranges);
    int oom = 0;
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    Py_BEGIN_ALLOW_THREADS
    end = walk_records(p, pos, buf.len, hlen, be, parts, starts, &records, &bad);
    starts[parts] = end;
    for (int i = 0; i < parts; i++) {
        Range *r = &ranges[i];
        r->p = p;
        r->ports = ports.buf;
        r->pos = starts[i];
        r->end = starts[i + 1];
        r->hlen = hlen;
        r->be = be;
        r->lt = lt;
        r->mode = ps->mode;
        r->divisor = (double)divisor;
        r->msgs = ps->msgs[i];
        r->cap = ps->msgcap[i];
        if (i > 0 && r->end > r->pos)
            started[i] = pthread_create(&tids[i], NULL, parse_range, r) == 0;
    }
    parse_range(&ranges[0]);
    for (int i = 1; i < parts; i++) {
        if (started[i])
            pthread_join(tids[i], NULL);
        else
            parse_range(&ranges[i]); /* no thread to be had: here */
        oom |= ranges[i].oom;
    }
    oom |= ranges[0].oom;
    Py_END_ALLOW_THREADS
    if (oom) {
        PyErr_NoMemory();
        goto out;
    }
    int used = 0; /* ranges that held records: the most of any call in scan.ranges */
    for (int i = 0; i < parts; i++)
        used += ranges[i].end > ranges[i].pos;
    PyObject *before = PyObject_GetAttr(scan, s_ranges);
    long most = before ? PyLong_AsLong(before) : -1;
    Py_XDECREF(before);
    if (most == -1 && PyErr_Occurred())
        goto out;
    if (used > most) {
        PyObject *v = PyLong_FromLong(used);
        int rc = v ? PyObject_SetAttr(scan, s_ranges, v) : -1;
        Py_XDECREF(v);
        if (rc < 0)
            goto out;
    }
    if (records > 0) {
        PyObject *first = PyObject_GetAttr(scan, s_first_ts);
        if (first == NULL)
            goto out;
        int unset = first == Py_None;
        Py_DECREF(first);
        if (unset) {
            PyObject *t = PyFloat_FromDouble((double)rd32(p + pos, be)
                                             + (double)rd32(p + pos + 4, be) / (double)divisor);
            int rc = t ? PyObject_SetAttr(scan, s_first_ts, t) : -1;
            Py_XDECREF(t);
            if (rc < 0)
                goto out;
        }
    }
    Walk w = {scan, names, ps, {0, 0, 0, 0, 0}};
    int failed = 0;
    for (int i = 0; i < parts && !failed; i++) {
        w.counts.malformed += ranges[i].malformed;
        for (size_t j = 0; j < ranges[i].n && !failed; j++) {
            const Msg *m = &ranges[i].msgs[j];
            if (j + 8 < ranges[i].n) /* the table is larger than the caches: ask early */
                __builtin_prefetch(&ps->table[ranges[i].msgs[j + 8].hash & (ps->cap - 1)]);
            failed = (m->kind == P_GENERAL ? pair_general(&w, m, lt) : pair_msg(&w, m)) < 0;
        }
    }
    if (flush_counts(scan, pairing, &w.counts) < 0)
        goto out;
    if (!failed)
        result = Py_BuildValue("nnk", end, records, (unsigned long)bad);
out:
    for (int i = 0; i < parts && ps != NULL; i++) { /* (pages the next buffer reuses) */
        ps->msgs[i] = ranges[i].msgs;
        ps->msgcap[i] = ranges[i].cap;
    }
    Py_XDECREF(names);
    Py_XDECREF(pairing);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&ports);
    return result;
}

/* Address text: a direct-mapped cache, as address() has for the bytes. */
static struct { Py_ssize_t len; unsigned char raw[16]; PyObject *obj; } texts[256];

static PyObject *address_text(const unsigned char *raw, Py_ssize_t len)
{
    unsigned h = 2166136261u;
    for (Py_ssize_t i = 0; i < len; i++)
        h = (h ^ raw[i]) * 16777619u;
    h = (h ^ h >> 8 ^ h >> 16) & 255;
    if (texts[h].obj != NULL && texts[h].len == len && !memcmp(texts[h].raw, raw, len))
        return Py_NewRef(texts[h].obj);
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(len == 4 ? AF_INET : AF_INET6, raw, text, sizeof text) == NULL)
        return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *obj = PyUnicode_FromString(text);
    if (obj != NULL) {
        Py_XSETREF(texts[h].obj, Py_NewRef(obj));
        texts[h].len = len;
        memcpy(texts[h].raw, raw, len);
    }
    return obj;
}

static PyObject *maybe_int(int32_t v)
{
    if (v < 0)
        return Py_NewRef(Py_None);
    return v < 65536 ? int16((unsigned)v) : PyLong_FromLong(v);
}

/* One column of the transactions, by its index in fastscan.COLUMNS. */
static PyObject *txn_value(const Txn *t, int col)
{
    switch (col) {
    case R_TS:
        return PyFloat_FromDouble(t->ts);
    case R_CADDR:
        return address_text(t->caddr, t->alen);
    case R_CPORT:
        return int16(t->cport);
    case R_SADDR:
        return address_text(t->saddr, t->alen);
    case R_SPORT:
        return int16(t->sport);
    case R_TRANSPORT:
        return Py_NewRef(t->tcp ? s_tcp : s_udp);
    case R_TID:
        return int16(t->tid);
    case R_QUERY:
        return Py_NewRef(t->qname ? t->qname : Py_None);
    case R_QTYPE:
        return maybe_int(t->qtype);
    case R_QCLASS:
        return maybe_int(t->qclass);
    case R_RCODE:
        return maybe_int(t->rcode);
    case R_FLAGS:
        return maybe_int(t->flags);
    case R_ANSWERS:
    case R_ANSWERS + 1:
    case R_ANSWERS + 2:
        return Py_NewRef(t->ans[col - R_ANSWERS] ? t->ans[col - R_ANSWERS] : Py_None);
    case R_RTT:
        return isnan(t->rtt) ? Py_NewRef(Py_None) : PyFloat_FromDouble(t->rtt);
    case R_STATUS:
        return Py_NewRef(t->status == T_ANSWERED ? s_answered
                         : t->status == T_UNANSWERED ? s_unanswered : s_response_only);
    default: /* R_IFACE: classic pcap records name no interface */
        return Py_NewRef(Py_None);
    }
}

/* pairs_columns(pairs, indices) -> [list per index]: the transactions' columns. */
static PyObject *pairs_columns(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *capsule, *indices;
    if (!PyArg_ParseTuple(args, "OO!", &capsule, &PyTuple_Type, &indices))
        return NULL;
    Pairs *ps = PyCapsule_GetPointer(capsule, PAIRS_CAPSULE);
    if (ps == NULL)
        return NULL;
    Py_ssize_t ncol = PyTuple_GET_SIZE(indices);
    PyObject *out = PyList_New(ncol);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t c = 0; c < ncol; c++) {
        long col = PyLong_AsLong(PyTuple_GET_ITEM(indices, c));
        if (col < 0 || col >= ROW_LEN) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "pairs_columns: no such column");
            Py_DECREF(out);
            return NULL;
        }
        PyObject *list = PyList_New((Py_ssize_t)ps->ntxn);
        if (list == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, c, list);
        for (size_t i = 0; i < ps->ntxn; i++) {
            PyObject *v = txn_value(&ps->txns[i], (int)col);
            if (v == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            PyList_SET_ITEM(list, (Py_ssize_t)i, v);
        }
    }
    return out;
}

static PyObject *pairs_len(PyObject *self, PyObject *capsule)
{
    (void)self;
    Pairs *ps = PyCapsule_GetPointer(capsule, PAIRS_CAPSULE);
    return ps == NULL ? NULL : PyLong_FromSize_t(ps->ntxn);
}

/* ---- Live capture: a TPACKET_V3 ring (or one packet) into a bounded C store ----
 *
 * Measured reason (benchmarks/bench_live.py: 1,000,000 DNS queries at 100,000 a
 * second, load average about 3 on the 2-core machine): recvmsg and a Python decode per
 * packet cost 25 us of CPU a packet. Walking the ring here but keeping each transaction
 * as Python objects (a row list, a key tuple, a pairing entry in a dict, as scan_pcap
 * does) still cost 1.9 us of the capture thread a packet (29% of it the kernel zeroing
 * pages for those objects, 24% dict lookups in the pairing table) and 0.6 s to turn
 * the 1,000,000 rows into columns for the statement. So live capture keeps each
 * transaction as a row of C columns (Rows) in a ring of `capacity` (the tracker's
 * buffer: the newest rows of every namespace, the oldest evicted first and counted per
 * namespace), pairs messages on a C table per network namespace (pairing.py's rule:
 * verdict_query, verdict_response) whose entries keep their key, so that a transaction
 * evicted from the buffer still pairs as the Python tracker's rows do, and makes
 * Python objects only for the columns a statement reads (live_columns) or a row asked
 * for (live_row): 0.36-0.40 us of the capture thread a packet in the same benchmark
 * (load 2.5-3.2; tcpdump -w took 0.16-0.17 us a packet, all of it). Messages this file
 * does not decode go to Python as in scan_pcap_threads (Scan._decode,
 * Scan._general_messages: TCP). tests/test_livescan.py compares it with the
 * pure-Python tracker (tracker.py), which is what runs without a compiler.
 *
 * live_ring(store, ns, scan, ring, block, nblocks, block_size, portmap, ifname, ifnames,
 *           marks, limit) -> (block, packets, errors, last_ts, blocks)
 * `ring` is a packet socket's mmap'ed PACKET_RX_RING (TPACKET_V3, SOCK_DGRAM: each
 * packet starts at its network header). From block `block`, the blocks the kernel has
 * handed to user space (at most `limit` of them: the GIL is held meanwhile) are walked,
 * each packet decoded (parse_frame, link type 101: raw IP) and paired into the store
 * for namespace `ns`, and the block given back to the kernel. Loopback's outgoing copy
 * is skipped (its incoming twin follows). A row gets the name of the interface it was
 * seen on (ifnames: index -> name, filled by calling ifname(index) on a miss). `marks`
 * gets (transport, src, sport, dst, dport, id, is_response) for each message the caller
 * must see: a query sent by this host (outgoing, or on loopback) to a DNS port, and
 * every response (livescan.py attributes and names them). A packet whose Python
 * callback failed is counted in errors and skipped: one bad packet never ends a
 * capture. scan (a tracker.LiveScan) gets the counts, as scan_pcap gives them. */
#include <linux/if_packet.h>

#define LIVE_ARPHRD_LOOPBACK 772
#define LIVE_CAPSULE "netsql.capture._cscan.Live"

typedef struct {
    uint64_t hash, seq; /* seq: its transaction (a row while seq >= Live.head) */
    double q, r;        /* NAN: none */
    unsigned char c[16], s[16];
    uint16_t cport, sport, tid;
    uint8_t alen, tcp, used, complete;
} LEntry;

/* The order entries were opened in (pairing.py's dict order): (seq, hash) of each
 * opening, oldest first; an item whose entry was reopened since or deleted is stale. */
typedef struct {
    uint64_t seq;
    uint32_t entry; /* its index in NsTab.ents */
} Opened;

typedef struct {
    PyObject *ns;     /* owned: the namespace's inode, or None */
    /* Open addressing on slots of 8 bytes (0: empty, else the key hash's low 32 bits
     * and the entry's index + 1), the entries apart: a lookup that finds nothing (a
     * new query) reads one line of slots, not 80-byte entries (a table of 65,536
     * open transactions in 80-byte slots, 21 MB, missed the caches on most lookups:
     * a fifth of the capture thread). */
    uint64_t *slots;
    size_t cap, used; /* cap a power of two, at most half used; used: open entries */
    LEntry *ents;     /* free ones chained through seq (freel: the first + 1, 0 none) */
    size_t ecap, nents;
    uint32_t freel;
    Opened *order;    /* a ring of ocap (a power of two) items, from ohead to otail */
    size_t ocap, ohead, otail;
    double expired;   /* capture time of the last trim */
    long long buffered, evicted;
} NsTab;

/* A message of a ring's block, parsed before any is paired (the pairing table's slots
 * are then fetched ahead: a table of 65,536 open transactions is larger than the
 * caches). kind P_GENERAL: m.dns is the packet, for the general decoder. */
typedef struct {
    Msg m;
    PyObject *iface; /* borrowed from ifnames */
    int local;
} LMsg;

/* A live row's meta bits. */
enum { M_STATUS = 3, M_TCP = 4, M_V6 = 8, M_QUESTION = 16, M_RCODE = 32 };

/* The live rows, a column each (row seq at index seq % capacity while head <= seq <
 * tail). calloc'd: the kernel gives a column's pages on their first write, so a column
 * a row never writes (IPv6 addresses for IPv4, answers and rtt for a query, the str of
 * a name read in C) costs it nothing; the pages a row writes were the largest cost of
 * the capture thread (the kernel zeroing them: 0.38 us of 0.88 with a 128-byte row
 * struct, bench_live on the 2-core VM). */
typedef struct {
    double *ts, *rtt;               /* rtt: when answered */
    uint32_t *c4, *s4;              /* IPv4 rows' addresses */
    unsigned char (*c6)[16], (*s6)[16];
    uint16_t *cport, *sport, *tid, *qtype, *qclass, *flags, *ifx;
    uint32_t *nsi;                  /* the namespace's table (Live.tabs) */
    uint8_t *meta, *rcode, *qlen;   /* meta: status (M_STATUS), M_... bits */
    uint32_t *qoff;                 /* low 32 bits of the name's place in Live.names */
    PyObject **qname, **ans;        /* owned (ans: 3 a row); NULL: none */
} Rows;

typedef struct {
    int mode;
    size_t capacity;
    Rows r;
    uint64_t head, tail;
    PyObject **ifaces; /* interface names rows point at (ifx; 0: none), owned */
    size_t nifaces;
    NsTab *tabs;
    size_t ntabs;
    LMsg *msgs; /* live_ring's block, parsed */
    size_t msgcap;
    /* The text of the rows' plain questions (most of them), a ring of ncap bytes (a
     * power of two): a str a row was a third of the memory a row took, and making it
     * a tenth of the capture's time; the str is made when the column is read. */
    unsigned char *names;
    size_t ncap;
    uint64_t nhead, ntail; /* the buffered rows' names are at [nhead, ntail) */
} Live;

typedef struct {
    Live *lv;
    NsTab *tab;
    int32_t nsi;
    PyObject *scan, *marks;
    const unsigned char *ports;
    Counts counts;
} LiveWalk;

static inline int port_in(const unsigned char *ports, unsigned port)
{
    return ports[port >> 3] >> (port & 7) & 1;
}

static void row_clear(Live *lv, size_t i)
{
    if (lv->r.qname != NULL)
        Py_CLEAR(lv->r.qname[i]);
    if (lv->r.ans != NULL)
        for (size_t k = 3 * i; k < 3 * i + 3; k++)
            Py_CLEAR(lv->r.ans[k]);
}

static void live_free(Live *lv)
{
    for (uint64_t s = lv->head; s < lv->tail; s++)
        row_clear(lv, s % lv->capacity);
    void *cols[] = {lv->r.ts, lv->r.rtt, lv->r.c4, lv->r.s4, lv->r.c6, lv->r.s6, lv->r.cport,
                    lv->r.sport, lv->r.tid, lv->r.qtype, lv->r.qclass, lv->r.flags, lv->r.nsi,
                    lv->r.ifx, lv->r.meta, lv->r.rcode, lv->r.qlen, lv->r.qoff, lv->r.qname,
                    lv->r.ans};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        free(cols[i]);
    for (size_t i = 1; i < lv->nifaces; i++)
        Py_XDECREF(lv->ifaces[i]);
    free(lv->ifaces);
    for (size_t i = 0; i < lv->ntabs; i++) {
        Py_XDECREF(lv->tabs[i].ns);
        free(lv->tabs[i].slots);
        free(lv->tabs[i].ents);
        free(lv->tabs[i].order);
    }
    free(lv->tabs);
    free(lv->msgs);
    free(lv->names);
    free(lv);
}

static void live_destroy(PyObject *capsule)
{
    Live *lv = PyCapsule_GetPointer(capsule, LIVE_CAPSULE);
    if (lv != NULL)
        live_free(lv);
}

/* live_new(capacity, mode) -> the store of a tracker (mode: as scan_pcap's). */
static PyObject *live_new(PyObject *self, PyObject *args)
{
    (void)self;
    Py_ssize_t capacity;
    int mode;
    if (!PyArg_ParseTuple(args, "ni", &capacity, &mode))
        return NULL;
    if (capacity < 1 || mode < 0 || mode > 3) {
        PyErr_SetString(PyExc_ValueError, "live_new: bad arguments");
        return NULL;
    }
    Live *lv = calloc(1, sizeof(Live));
    if (lv == NULL)
        return PyErr_NoMemory();
    lv->mode = mode;
    lv->capacity = (size_t)capacity;
    size_t n = lv->capacity;
    int ok = 1;
#define COLUMN(f, per) ok &= (lv->r.f = huge(calloc(n, (per)), n * (per))) != NULL
    COLUMN(ts, 8); COLUMN(rtt, 8); COLUMN(c4, 4); COLUMN(s4, 4); COLUMN(c6, 16);
    COLUMN(s6, 16); COLUMN(cport, 2); COLUMN(sport, 2); COLUMN(tid, 2); COLUMN(qtype, 2);
    COLUMN(qclass, 2); COLUMN(flags, 2); COLUMN(nsi, 4); COLUMN(ifx, 2); COLUMN(meta, 1);
    COLUMN(rcode, 1); COLUMN(qlen, 1); COLUMN(qoff, 4); COLUMN(qname, sizeof(PyObject *));
    COLUMN(ans, 3 * sizeof(PyObject *));
#undef COLUMN
    lv->ncap = 1 << 16;
    lv->names = malloc(lv->ncap);
    lv->ifaces = calloc(1, sizeof(PyObject *));
    lv->nifaces = 1;
    if (!ok || lv->names == NULL || lv->ifaces == NULL) {
        live_free(lv);
        return PyErr_NoMemory();
    }
    PyObject *cap = PyCapsule_New(lv, LIVE_CAPSULE, live_destroy);
    if (cap == NULL)
        live_free(lv);
    return cap;
}

/* An empty table (a namespace's first queries: it grows as they come); -1: no memory
 * (t's tables then NULL). */
static int ltab_init(NsTab *t)
{
    t->cap = t->ocap = t->ecap = 64;
    t->used = t->nents = t->ohead = t->otail = 0;
    t->freel = 0;
    t->slots = calloc(t->cap, sizeof(uint64_t));
    t->ents = malloc(t->ecap * sizeof(LEntry));
    t->order = malloc(t->ocap * sizeof(Opened));
    if (t->slots == NULL || t->ents == NULL || t->order == NULL) {
        free(t->slots);
        free(t->ents);
        free(t->order);
        t->slots = NULL;
        t->ents = NULL;
        t->order = NULL;
        return -1;
    }
    return 0;
}

/* The table of namespace `ns` (made when `make`); NULL with *index -1 when there is
 * none, NULL with an exception on error. */
static NsTab *live_tab(Live *lv, PyObject *ns, int make, int32_t *index)
{
    *index = -1;
    for (size_t i = 0; i < lv->ntabs; i++) {
        PyObject *o = lv->tabs[i].ns;
        int eq = o == ns ? 1 : (o == Py_None || ns == Py_None)
            ? 0 : PyObject_RichCompareBool(o, ns, Py_EQ);
        if (eq < 0)
            return NULL;
        if (eq) {
            *index = (int32_t)i;
            return &lv->tabs[i];
        }
    }
    if (!make)
        return NULL;
    NsTab *more = realloc(lv->tabs, (lv->ntabs + 1) * sizeof(NsTab));
    if (more == NULL)
        return (NsTab *)PyErr_NoMemory();
    lv->tabs = more;
    NsTab *t = &lv->tabs[lv->ntabs];
    memset(t, 0, sizeof *t);
    if (ltab_init(t) < 0)
        return (NsTab *)PyErr_NoMemory();
    t->ns = Py_NewRef(ns);
    t->expired = -INFINITY;
    *index = (int32_t)lv->ntabs++;
    return t;
}

/* The entry of the key (client c, server s), or NULL and in *hole the empty slot for
 * it. */
static LEntry *lslot(NsTab *t, uint64_t h, int tcp, const unsigned char *c, unsigned cport,
                     const unsigned char *s, unsigned sport, unsigned tid, int alen,
                     size_t *hole)
{
    size_t mask = t->cap - 1;
    uint64_t tag = h & 0xFFFFFFFFu;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        uint64_t sl = t->slots[i];
        if (sl == 0) {
            *hole = i;
            return NULL;
        }
        if (sl >> 32 == tag) {
            LEntry *e = &t->ents[(uint32_t)sl - 1];
            if (e->hash == h && e->tcp == tcp && e->alen == alen && e->cport == cport
                    && e->sport == sport && e->tid == tid && !memcmp(e->c, c, alen)
                    && !memcmp(e->s, s, alen))
                return e;
        }
    }
}

/* A new entry in empty slot `hole` for a key of hash h (NULL: no memory). */
static LEntry *ltab_new(NsTab *t, size_t hole, uint64_t h)
{
    uint32_t idx;
    if (t->freel) {
        idx = t->freel - 1;
        t->freel = (uint32_t)t->ents[idx].seq;
    } else {
        if (t->nents == t->ecap) {
            LEntry *more = realloc(t->ents, t->ecap * 2 * sizeof(LEntry));
            if (more == NULL)
                return NULL;
            t->ents = more;
            t->ecap *= 2;
        }
        idx = (uint32_t)t->nents++;
    }
    t->slots[hole] = (h & 0xFFFFFFFFu) << 32 | (uint64_t)(idx + 1);
    t->used++;
    LEntry *e = &t->ents[idx];
    e->used = 1;
    e->hash = h;
    return e;
}

static int ltab_grow(NsTab *t)
{
    size_t cap = t->cap * 2, mask = cap - 1;
    uint64_t *slots = huge(calloc(cap, sizeof(uint64_t)), cap * sizeof(uint64_t));
    if (slots == NULL)
        return -1;
    for (size_t idx = 0; idx < t->nents; idx++) {
        const LEntry *e = &t->ents[idx];
        if (!e->used)
            continue;
        size_t j = (size_t)e->hash & mask;
        while (slots[j])
            j = (j + 1) & mask;
        slots[j] = (e->hash & 0xFFFFFFFFu) << 32 | (uint64_t)(idx + 1);
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

/* Note an opening in t->order. */
static int ltab_opened(NsTab *t, uint64_t seq, uint32_t entry)
{
    if (t->otail - t->ohead == t->ocap) {
        Opened *more = malloc(t->ocap * 2 * sizeof(Opened));
        if (more == NULL)
            return -1;
        for (size_t i = t->ohead; i < t->otail; i++)
            more[i - t->ohead] = t->order[i & (t->ocap - 1)];
        free(t->order);
        t->order = more;
        t->otail -= t->ohead;
        t->ohead = 0;
        t->ocap *= 2;
    }
    t->order[t->otail++ & (t->ocap - 1)] = (Opened){seq, entry};
    return 0;
}

/* The entry an opening made, if it is still the key's: NULL when stale. */
static LEntry *ltab_of(NsTab *t, const Opened *o)
{
    LEntry *e = &t->ents[o->entry];
    return e->used && e->seq == o->seq ? e : NULL;
}

/* Delete entry e: its slot emptied (linear probing's backward shift: no tombstones),
 * the entry freed. */
static void ltab_delete(NsTab *t, LEntry *e)
{
    size_t mask = t->cap - 1, i = (size_t)e->hash & mask, j;
    uint32_t idx = (uint32_t)(e - t->ents);
    while ((uint32_t)t->slots[i] != idx + 1)
        i = (i + 1) & mask;
    for (j = i;;) {
        j = (j + 1) & mask;
        uint64_t sl = t->slots[j];
        if (sl == 0)
            break;
        size_t home = (size_t)(sl >> 32) & mask;
        if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
            continue; /* its place is between the hole and itself: it stays */
        t->slots[i] = sl;
        i = j;
    }
    t->slots[i] = 0;
    t->used--;
    e->used = 0;
    e->seq = t->freel;
    t->freel = idx + 1;
}

static inline double entry_last(const LEntry *e)
{
    return isnan(e->q) ? e->r : isnan(e->r) ? e->q : e->q > e->r ? e->q : e->r;
}

/* pairing.Pairing.trim: in order of opening, at most once a second of capture time,
 * the transactions at the front older than WINDOW are forgotten; past `limit` open
 * ones, the oldest half too (the count returned). Each deletes what it forgets and
 * looks at nothing else. */
static size_t ltab_trim(NsTab *t, double now, size_t limit)
{
    int over = t->used > limit;
    size_t forgotten = 0, keep = limit / 2 > 1 ? limit / 2 : 1, omask = t->ocap - 1;
    if (!over && now - t->expired < 1.0)
        return 0;
    t->expired = now;
    int leading = 1; /* still in the run of old ones at the front */
    while (t->ohead < t->otail) {
        Opened *o = &t->order[t->ohead & omask];
        if (t->ohead + 8 < t->otail)
            __builtin_prefetch(&t->ents[t->order[(t->ohead + 8) & omask].entry]);
        LEntry *e = ltab_of(t, o);
        if (e != NULL) {
            leading &= now - entry_last(e) >= WINDOW;
            if (!leading) {
                if (!over || t->used <= keep)
                    break;
                forgotten++;
            }
            ltab_delete(t, e);
        }
        t->ohead++;
    }
    return forgotten;
}

/* The index of row seq, or -1 once the buffer evicted it. */
static inline Py_ssize_t live_at(const Live *lv, uint64_t seq)
{
    return seq >= lv->head && seq < lv->tail ? (Py_ssize_t)(seq % lv->capacity) : -1;
}

/* The index of interface name `iface` in lv->ifaces (0: none), added on first sight. */
static uint16_t live_iface(Live *lv, PyObject *iface)
{
    if (iface == NULL || iface == Py_None)
        return 0;
    for (size_t i = 1; i < lv->nifaces; i++)
        if (lv->ifaces[i] == iface)
            return (uint16_t)i;
    for (size_t i = 1; i < lv->nifaces; i++) {
        int eq = PyObject_RichCompareBool(lv->ifaces[i], iface, Py_EQ);
        if (eq < 0)
            PyErr_Clear();
        if (eq > 0)
            return (uint16_t)i;
    }
    if (lv->nifaces >= 65535)
        return 0; /* (65,534 interface names seen: the rest unnamed) */
    PyObject **more = realloc(lv->ifaces, (lv->nifaces + 1) * sizeof(PyObject *));
    if (more == NULL)
        return 0;
    lv->ifaces = more;
    lv->ifaces[lv->nifaces] = Py_NewRef(iface);
    return (uint16_t)lv->nifaces++;
}

static inline void set_status(Live *lv, size_t i, int status)
{
    lv->r.meta[i] = (uint8_t)((lv->r.meta[i] & ~M_STATUS) | status);
}

/* A new transaction of the key (client c, server s) in the empty or stale entry e,
 * the oldest row evicted when the buffer is full: its index, or -1 (no memory). */
static Py_ssize_t live_open(LiveWalk *w, LEntry *e, size_t hole, const Msg *m,
                            int is_query, PyObject *iface)
{
    Live *lv = w->lv;
    Rows *r = &lv->r;
    if (e == NULL && (e = ltab_new(w->tab, hole, m->hash)) == NULL)
        return -1;
    const unsigned char *c = is_query ? m->src : m->dst, *s = is_query ? m->dst : m->src;
    if (lv->tail - lv->head == lv->capacity) {
        size_t old = lv->head % lv->capacity;
        if (r->qlen[old])
            lv->nhead += (uint32_t)(r->qoff[old] - (uint32_t)lv->nhead) + r->qlen[old];
        lv->tabs[r->nsi[old]].buffered--;
        lv->tabs[r->nsi[old]].evicted++;
        row_clear(lv, old);
        lv->head++;
    }
    if (ltab_opened(w->tab, lv->tail, (uint32_t)(e - w->tab->ents)) < 0)
        return -1;
    size_t i = lv->tail % lv->capacity;
    r->ts[i] = m->ts;
    if (m->alen == 4) {
        memcpy(&r->c4[i], c, 4);
        memcpy(&r->s4[i], s, 4);
    } else {
        memcpy(r->c6[i], c, 16);
        memcpy(r->s6[i], s, 16);
    }
    r->cport[i] = is_query ? m->sport : m->dport;
    r->sport[i] = is_query ? m->dport : m->sport;
    r->tid[i] = (uint16_t)RD16(m->dns);
    r->flags[i] = (uint16_t)RD16(m->dns + 2);
    r->qtype[i] = r->qclass[i] = 0;
    r->rcode[i] = 0;
    r->qlen[i] = 0;
    r->meta[i] = (uint8_t)((is_query ? T_UNANSWERED : T_RESPONSE_ONLY)
                           | (m->tcp ? M_TCP : 0) | (m->alen == 16 ? M_V6 : 0));
    r->nsi[i] = (uint32_t)w->nsi;
    r->ifx[i] = live_iface(lv, iface);
    e->seq = lv->tail++;
    e->q = is_query ? m->ts : NAN;
    e->r = is_query ? NAN : m->ts;
    e->complete = 0;
    memcpy(e->c, c, m->alen);
    memcpy(e->s, s, m->alen);
    e->cport = r->cport[i];
    e->sport = r->sport[i];
    e->tid = r->tid[i];
    e->alen = m->alen;
    e->tcp = m->tcp;
    w->tab->buffered++;
    return (Py_ssize_t)i;
}

/* Row i's question: type and class, and the name (q: a str, or NULL: a plain
 * question's text into lv->names from dns). */
static int live_question(Live *lv, size_t i, PyObject *q, int32_t qt, int32_t qc,
                         const unsigned char *dns)
{
    Rows *r = &lv->r;
    if (qt >= 0) {
        r->qtype[i] = (uint16_t)qt;
        r->qclass[i] = (uint16_t)qc;
        r->meta[i] |= M_QUESTION;
    }
    if (q != NULL) {
        Py_XSETREF(r->qname[i], q);
        return 0;
    }
    if (dns == NULL)
        return 0;
    if (lv->ncap - (size_t)(lv->ntail - lv->nhead) < 256) {
        size_t cap = lv->ncap * 2;
        unsigned char *more = malloc(cap);
        if (more == NULL)
            return -1;
        for (uint64_t o = lv->nhead; o < lv->ntail; o++)
            more[o & (cap - 1)] = lv->names[o & (lv->ncap - 1)];
        free(lv->names);
        lv->names = more;
        lv->ncap = cap;
    }
    char text[256];
    Py_ssize_t n = question_chars(dns, text);
    size_t at = (size_t)lv->ntail & (lv->ncap - 1), first = lv->ncap - at;
    if (first > (size_t)n)
        first = (size_t)n;
    memcpy(lv->names + at, text, first);
    memcpy(lv->names, text + first, (size_t)n - first);
    r->qoff[i] = (uint32_t)lv->ntail;
    r->qlen[i] = (uint8_t)n;
    lv->ntail += (uint64_t)n;
    return 0;
}

/* Where row i's name starts in lv->names (its offset's low 32 bits, and the buffered
 * names span less than 4 GiB). */
static inline uint64_t name_at(const Live *lv, size_t i)
{
    return lv->ntail - (uint32_t)((uint32_t)lv->ntail - lv->r.qoff[i]);
}

static PyObject *opt_int(int has, unsigned v)
{
    return has ? int16(v) : Py_NewRef(Py_None);
}

/* One column of live row i, by index in fastscan.COLUMNS; addresses as text, or as
 * raw bytes when `raw` (tracker.py's rows). */
static PyObject *live_value(const Live *lv, size_t i, int col, int raw)
{
    const Rows *r = &lv->r;
    int meta = r->meta[i], status = meta & M_STATUS, v6 = meta & M_V6;
    switch (col) {
    case R_TS:
        return PyFloat_FromDouble(r->ts[i]);
    case R_CADDR:
    case R_SADDR: {
        const unsigned char *a = col == R_CADDR
            ? (v6 ? r->c6[i] : (const unsigned char *)&r->c4[i])
            : (v6 ? r->s6[i] : (const unsigned char *)&r->s4[i]);
        return raw ? address(a, v6 ? 16 : 4) : address_text(a, v6 ? 16 : 4);
    }
    case R_CPORT:
        return int16(r->cport[i]);
    case R_SPORT:
        return int16(r->sport[i]);
    case R_TRANSPORT:
        return Py_NewRef(meta & M_TCP ? s_tcp : s_udp);
    case R_TID:
        return int16(r->tid[i]);
    case R_QUERY: {
        if (r->qname[i] != NULL)
            return Py_NewRef(r->qname[i]);
        if (r->qlen[i] == 0)
            return Py_NewRef(Py_None);
        char text[256];
        uint64_t at = name_at(lv, i);
        for (size_t k = 0; k < r->qlen[i]; k++)
            text[k] = (char)lv->names[(at + k) & (lv->ncap - 1)];
        return name_object(text, r->qlen[i]);
    }
    case R_QTYPE:
        return opt_int(meta & M_QUESTION, r->qtype[i]);
    case R_QCLASS:
        return opt_int(meta & M_QUESTION, r->qclass[i]);
    case R_RCODE:
        return opt_int(meta & M_RCODE, r->rcode[i]);
    case R_FLAGS:
        return int16(r->flags[i]);
    case R_ANSWERS:
    case R_ANSWERS + 1:
    case R_ANSWERS + 2: {
        PyObject *a = r->ans[3 * i + (size_t)(col - R_ANSWERS)];
        return Py_NewRef(a ? a : Py_None);
    }
    case R_RTT:
        return status == T_ANSWERED ? PyFloat_FromDouble(r->rtt[i]) : Py_NewRef(Py_None);
    case R_IFACE:
        return Py_NewRef(r->ifx[i] ? lv->ifaces[r->ifx[i]] : Py_None);
    default: /* R_STATUS */
        return Py_NewRef(status == T_ANSWERED ? s_answered
                         : status == T_UNANSWERED ? s_unanswered : s_response_only);
    }
}

static int live_mark(LiveWalk *w, const Msg *m, unsigned tid, int response)
{
    PyObject *s = address(m->src, m->alen), *d = address(m->dst, m->alen);
    PyObject *sp = int16(m->sport), *dp = int16(m->dport), *t = int16(tid), *mk = NULL;
    if (s && d && sp && dp && t)
        mk = PyTuple_Pack(7, m->tcp ? s_tcp : s_udp, s, sp, d, dp, t,
                          response ? Py_True : Py_False);
    Py_XDECREF(s);
    Py_XDECREF(d);
    Py_XDECREF(sp);
    Py_XDECREF(dp);
    Py_XDECREF(t);
    if (mk == NULL)
        return -1;
    int rc = PyList_Append(w->marks, mk);
    Py_DECREF(mk);
    return rc;
}

/* Scan._message for one message, paired on the namespace's C table. */
static int live_msg(LiveWalk *w, const Msg *m, int local, PyObject *iface)
{
    Live *lv = w->lv;
    Rows *r = &lv->r;
    NsTab *tab = w->tab;
    const unsigned char *dns = m->dns;
    unsigned tid = RD16(dns), bits = RD16(dns + 2);
    int need_q = lv->mode & 1, need_r = lv->mode & 2, response = (bits & 0x8000) != 0;
    double ts = m->ts;
    if ((response || (local && port_in(w->ports, m->dport))) && live_mark(w, m, tid, response) < 0)
        return -1;
    if (tab->used * 2 >= tab->cap && ltab_grow(tab) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    w->counts.messages++;
    if (!response) {
        w->counts.queries++;
        size_t hole = 0;
        LEntry *e = lslot(tab, m->hash, m->tcp, m->src, m->sport, m->dst, m->dport, tid,
                          m->alen, &hole);
        int verdict = e != NULL ? verdict_query(e->q, e->r, e->complete, ts) : NEW;
        if (verdict == JOINED) { /* its response came first: the row has it already */
            e->q = ts;
            Py_ssize_t i = live_at(lv, e->seq);
            if (i >= 0) {
                set_status(lv, (size_t)i, T_ANSWERED);
                r->rtt[i] = 0.0;
            }
            return 0;
        }
        if (verdict == DUPLICATE) {
            w->counts.duplicates++;
            return 0;
        }
        PyObject *q = NULL;
        int32_t qt = -1, qc = -1;
        int plain = need_q && (m->plain & 1); /* its name kept here, as text */
        if (plain) {
            qt = (int32_t)RD16(dns + m->qend - 4);
            qc = (int32_t)RD16(dns + m->qend - 2);
        } else if (need_q) {
            int ok = decode(w->scan, m, &q, &qt, &qc, NULL);
            if (ok < 0)
                return -1;
            if (ok == 0) {
                w->counts.malformed++;
                return 0;
            }
        }
        Py_ssize_t i = live_open(w, e, hole, m, 1, iface);
        if (i < 0 || live_question(lv, (size_t)i, q, qt, qc, plain ? dns : NULL) < 0) {
            if (i < 0)
                Py_XDECREF(q);
            PyErr_NoMemory();
            return -1;
        }
        return 0;
    }
    w->counts.responses++;
    size_t hole = 0;
    LEntry *e = lslot(tab, m->hash, m->tcp, m->dst, m->dport, m->src, m->sport, tid, m->alen,
                      &hole);
    int verdict = e != NULL ? verdict_response(e->q, e->r, ts) : NEW;
    if (verdict == DUPLICATE) {
        w->counts.duplicates++;
        return 0;
    }
    Py_ssize_t i = -1;
    if (verdict == ANSWERS) {
        e->r = ts;
        e->complete = 1;
        i = live_at(lv, e->seq); /* -1: the buffer evicted it; the pairing stands */
        if (i >= 0) {
            set_status(lv, (size_t)i, T_ANSWERED);
            r->rtt[i] = 0.0 > ts - r->ts[i] ? 0.0 : ts - r->ts[i]; /* max(ts - row ts, 0) */
        }
    }
    PyObject *q = NULL, *answers[3] = {NULL, NULL, NULL};
    int32_t qt = -1, qc = -1;
    int ok = 1;
    if (need_r || (verdict == NEW && need_q)) {
        ok = decode(w->scan, m, &q, &qt, &qc, need_r ? answers : NULL);
        if (ok < 0)
            return -1;
    }
    if (verdict == NEW) {
        i = live_open(w, e, hole, m, 0, iface);
        if (i < 0) {
            Py_XDECREF(q);
            for (int k = 0; k < 3; k++)
                Py_XDECREF(answers[k]);
            PyErr_NoMemory();
            return -1;
        }
        live_question(lv, (size_t)i, q, qt, qc, NULL); /* (takes q) */
        q = NULL;
    }
    Py_XDECREF(q);
    if (i >= 0) {
        r->rcode[i] = (uint8_t)(bits & 0xF); /* rcode and flags: the response's header */
        r->meta[i] |= M_RCODE;
        r->flags[i] = (uint16_t)bits;
    }
    if (need_r && ok == 0)
        w->counts.malformed++;
    for (int k = 0; k < 3; k++) {
        if (i >= 0 && need_r && ok)
            Py_XSETREF(r->ans[3 * (size_t)i + (size_t)k], answers[k]);
        else
            Py_XDECREF(answers[k]);
    }
    return 0;
}

/* A frame for the general decoder (TCP): its messages, each paired. */
static int live_general(LiveWalk *w, double ts, const unsigned char *f, Py_ssize_t n,
                        int local, PyObject *iface)
{
    PyObject *fr = PyBytes_FromStringAndSize((const char *)f, n);
    PyObject *got = fr ? PyObject_CallMethod(w->scan, "_general_messages", "dOiO", ts, fr,
                                             101, iface ? iface : Py_None) : NULL;
    Py_XDECREF(fr);
    if (got == NULL)
        return -1;
    PyObject *seq = PySequence_Fast(got, "Scan._general_messages: not a sequence");
    Py_DECREF(got);
    if (seq == NULL)
        return -1;
    int rc = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq) && rc == 0; i++) {
        /* (source address bytes, port, destination address bytes, port, tcp, payload) */
        Msg m = {0};
        const char *src, *dst, *dns;
        Py_ssize_t slen, dlen, len;
        int sport, dport, tcp;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "y#iy#ipy#", &src, &slen,
                              &sport, &dst, &dlen, &dport, &tcp, &dns, &len)) {
            rc = -1;
            break;
        }
        if (slen != dlen || (slen != 4 && slen != 16)) {
            PyErr_SetString(PyExc_ValueError, "Scan._general_messages: bad address");
            rc = -1;
            break;
        }
        if (len < 12) {
            w->counts.malformed++;
            continue;
        }
        m.ts = ts;
        m.src = (const unsigned char *)src;
        m.dst = (const unsigned char *)dst;
        m.dns = (const unsigned char *)dns;
        m.alen = (uint8_t)slen;
        m.dlen = (uint32_t)len;
        m.sport = (uint16_t)sport;
        m.dport = (uint16_t)dport;
        m.tcp = (uint8_t)tcp;
        m.kind = P_MESSAGE;
        classify(&m, w->lv->mode);
        rc = live_msg(w, &m, local, iface);
    }
    Py_DECREF(seq);
    return rc;
}

/* One IP packet: Scan.feed's loop body (link type 101), into the store. */
static int live_frame(LiveWalk *w, double ts, const unsigned char *f, Py_ssize_t n,
                      int local, PyObject *iface)
{
    Found fd;
    switch (parse_frame(101, f, n, w->ports, &fd)) {
    case P_SKIP:
        return 0;
    case P_MALFORMED:
        w->counts.malformed++;
        return 0;
    case P_GENERAL:
        return live_general(w, ts, f, n, local, iface);
    }
    Msg m = {0};
    m.ts = ts;
    m.src = fd.src;
    m.dst = fd.dst;
    m.alen = (uint8_t)fd.alen;
    m.sport = (uint16_t)fd.sport;
    m.dport = (uint16_t)fd.dport;
    m.dns = fd.dns;
    m.dlen = (uint32_t)fd.dlen;
    m.kind = P_MESSAGE;
    classify(&m, w->lv->mode);
    return live_msg(w, &m, local, iface);
}

/* The store and the walk of namespace ns over scan (its table made on first use). */
static Live *live_walk(PyObject *capsule, PyObject *ns, PyObject *scan, PyObject *marks,
                       const unsigned char *ports, LiveWalk *w)
{
    memset(w, 0, sizeof *w);
    Live *lv = PyCapsule_GetPointer(capsule, LIVE_CAPSULE);
    if (lv == NULL)
        return NULL;
    w->lv = lv;
    w->scan = scan;
    w->marks = marks;
    w->ports = ports;
    w->tab = live_tab(lv, ns, 1, &w->nsi);
    return w->tab == NULL ? NULL : lv;
}

static int live_flush(LiveWalk *w)
{
    PyObject *pairing = PyObject_GetAttr(w->scan, s_pairing);
    if (pairing == NULL)
        return -1;
    int rc = flush_counts(w->scan, pairing, &w->counts);
    Py_DECREF(pairing);
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

static PyObject *live_ring(PyObject *self, PyObject *args)
{
    (void)self;
    LiveWalk w;
    Py_buffer ring, ports;
    Py_ssize_t block, nblocks, bsize, blocks = 0, limit = -1;
    long packets = 0, errors = 0;
    double last = 0.0;
    PyObject *capsule, *ns, *scan, *ifname, *ifnames, *marks, *result = NULL;
    if (!PyArg_ParseTuple(args, "OOOw*nnny*OO!O!|n", &capsule, &ns, &scan, &ring, &block,
                          &nblocks, &bsize, &ports, &ifname, &PyDict_Type, &ifnames,
                          &PyList_Type, &marks, &limit))
        return NULL;
    if (limit < 0 || limit > nblocks)
        limit = nblocks;
    if (ports.len != 8192 || nblocks <= 0 || bsize < 64 || block < 0 || block >= nblocks
            || nblocks > ring.len / bsize) {
        PyErr_SetString(PyExc_ValueError, "live_ring: bad arguments");
        goto out;
    }
    Live *lv = live_walk(capsule, ns, scan, marks, ports.buf, &w);
    if (lv == NULL)
        goto out;
    int last_index = -1;
    PyObject *name = NULL; /* borrowed from ifnames: the name of last_index */
    while (blocks < limit) {
        unsigned char *b = (unsigned char *)ring.buf + block * bsize;
        struct tpacket_block_desc *bd = (void *)b;
        if (!(__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
            break;
        /* a block's packets parsed first, then paired (their table slots fetched ahead) */
        Py_ssize_t off = bd->hdr.bh1.offset_to_first_pkt;
        size_t n = 0, most = (size_t)bsize / TPACKET3_HDRLEN + 1;
        if (lv->msgcap < most) {
            LMsg *more = realloc(lv->msgs, most * sizeof(LMsg));
            if (more == NULL) {
                PyErr_NoMemory();
                goto out;
            }
            lv->msgs = more;
            lv->msgcap = most;
        }
        for (uint32_t i = 0; i < bd->hdr.bh1.num_pkts && n < most; i++) {
            if (off < (Py_ssize_t)sizeof *bd || off + (Py_ssize_t)TPACKET3_HDRLEN > bsize)
                break; /* never past the block, whatever it says */
            const struct tpacket3_hdr *h = (const void *)(b + off);
            Py_ssize_t len = h->tp_snaplen;
            if (h->tp_net < TPACKET3_HDRLEN || off + h->tp_net + len > bsize)
                break;
            const struct sockaddr_ll *ll = (const void *)((const unsigned char *)h
                                                          + TPACKET_ALIGN(sizeof *h));
            if (!(ll->sll_pkttype == PACKET_OUTGOING
                  && ll->sll_hatype == LIVE_ARPHRD_LOOPBACK)) {
                LMsg *lm = &lv->msgs[n];
                Found fd;
                const unsigned char *f = b + off + h->tp_net;
                double ts = (double)h->tp_sec + (double)h->tp_nsec / 1e9;
                packets++;
                if (ts > last)
                    last = ts;
                if (ll->sll_ifindex != last_index) {
                    name = ring_ifname(ifname, ifnames, ll->sll_ifindex);
                    last_index = name == NULL ? -1 : ll->sll_ifindex;
                }
                int kind = name == NULL ? -1 : parse_frame(101, f, len, w.ports, &fd);
                if (kind < 0) {
                    errors++;
                    PyErr_Clear();
                } else if (kind == P_MALFORMED) {
                    w.counts.malformed++;
                } else if (kind != P_SKIP) {
                    memset(&lm->m, 0, sizeof lm->m);
                    lm->m.ts = ts;
                    lm->m.kind = (uint8_t)kind;
                    lm->iface = name;
                    lm->local = ll->sll_pkttype == PACKET_OUTGOING
                        || ll->sll_hatype == LIVE_ARPHRD_LOOPBACK;
                    if (kind == P_GENERAL) {
                        lm->m.dns = f;
                        lm->m.dlen = (uint32_t)len;
                    } else {
                        lm->m.src = fd.src;
                        lm->m.dst = fd.dst;
                        lm->m.alen = (uint8_t)fd.alen;
                        lm->m.sport = (uint16_t)fd.sport;
                        lm->m.dport = (uint16_t)fd.dport;
                        lm->m.dns = fd.dns;
                        lm->m.dlen = (uint32_t)fd.dlen;
                        classify(&lm->m, lv->mode);
                    }
                    n++;
                }
            }
            if (h->tp_next_offset == 0)
                break;
            off += h->tp_next_offset;
        }
        for (size_t j = 0; j < n; j++) {
            LMsg *lm = &lv->msgs[j];
            if (j + 8 < n && lv->msgs[j + 8].m.kind == P_MESSAGE)
                __builtin_prefetch(&w.tab->slots[lv->msgs[j + 8].m.hash & (w.tab->cap - 1)]);
            int rc = lm->m.kind == P_GENERAL
                ? live_general(&w, lm->m.ts, lm->m.dns, lm->m.dlen, lm->local, lm->iface)
                : live_msg(&w, &lm->m, lm->local, lm->iface);
            if (rc < 0) {
                errors++;
                PyErr_Clear();
            }
        }
        __atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
        block = (block + 1) % nblocks;
        blocks++;
    }
    if (live_flush(&w) < 0)
        goto out;
    result = Py_BuildValue("nlldn", block, packets, errors, last, blocks);
out:
    PyBuffer_Release(&ring);
    PyBuffer_Release(&ports);
    return result;
}

/* live_packet(store, ns, scan, ts, packet, interface, local, portmap, marks): one IP
 * packet (as a cooked socket reads it) into the store; a failed callback raises. */
static PyObject *live_packet(PyObject *self, PyObject *args)
{
    (void)self;
    LiveWalk w;
    Py_buffer pkt, ports;
    double ts;
    int local;
    PyObject *capsule, *ns, *scan, *iface, *marks, *result = NULL;
    if (!PyArg_ParseTuple(args, "OOOdy*Opy*O!", &capsule, &ns, &scan, &ts, &pkt, &iface,
                          &local, &ports, &PyList_Type, &marks))
        return NULL;
    if (ports.len != 8192) {
        PyErr_SetString(PyExc_ValueError, "live_packet: bad arguments");
        goto out;
    }
    if (live_walk(capsule, ns, scan, marks, ports.buf, &w) == NULL)
        goto out;
    int rc = live_frame(&w, ts, pkt.buf, pkt.len, local, iface == Py_None ? NULL : iface);
    if (live_flush(&w) < 0 || rc < 0)
        goto out;
    result = Py_NewRef(Py_None);
out:
    PyBuffer_Release(&pkt);
    PyBuffer_Release(&ports);
    return result;
}

/* live_trim(store, ns, now, limit) -> forgotten: ltab_trim on namespace ns's table. */
static PyObject *live_trim(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *capsule, *ns;
    double now;
    Py_ssize_t limit;
    int32_t nsi;
    if (!PyArg_ParseTuple(args, "OOdn", &capsule, &ns, &now, &limit))
        return NULL;
    Live *lv = PyCapsule_GetPointer(capsule, LIVE_CAPSULE);
    if (lv == NULL)
        return NULL;
    NsTab *t = live_tab(lv, ns, 0, &nsi);
    if (t == NULL)
        return PyErr_Occurred() ? NULL : PyLong_FromLong(0);
    return PyLong_FromSize_t(ltab_trim(t, now, limit < 0 ? 0 : (size_t)limit));
}

/* live_forget(store, ns): namespace ns went away: its open transactions with it. */
static PyObject *live_forget(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *capsule, *ns;
    int32_t nsi;
    if (!PyArg_ParseTuple(args, "OO", &capsule, &ns))
        return NULL;
    Live *lv = PyCapsule_GetPointer(capsule, LIVE_CAPSULE);
    if (lv == NULL)
        return NULL;
    NsTab *t = live_tab(lv, ns, 0, &nsi);
    if (t == NULL && PyErr_Occurred())
        return NULL;
    if (t != NULL) { /* its memory too: namespaces come and go (its counts stay) */
        NsTab old = *t;
        if (ltab_init(t) < 0) {
            *t = old;
            return PyErr_NoMemory();
        }
        free(old.slots);
        free(old.ents);
        free(old.order);
    }
    Py_RETURN_NONE;
}

/* live_find(store, ns, tcp, client, cport, server, sport, id) -> the buffered row (its
 * seq) of the key's transaction, or None. */
static PyObject *live_find(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *capsule, *ns;
    const char *c, *s;
    Py_ssize_t clen, slen;
    int tcp, cport, sport, tid;
    int32_t nsi;
    if (!PyArg_ParseTuple(args, "OOpy#iy#ii", &capsule, &ns, &tcp, &c, &clen, &cport, &s,
                          &slen, &sport, &tid))
        return NULL;
    Live *lv = PyCapsule_GetPointer(capsule, LIVE_CAPSULE);
    if (lv == NULL)
        return NULL;
    NsTab *t = live_tab(lv, ns, 0, &nsi);
    if (t == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    if (clen != slen || (clen != 4 && clen != 16))
        Py_RETURN_NONE;
    uint64_t h = key_hash(tcp, (const unsigned char *)c, cport, (const unsigned char *)s,
                          sport, tid, (int)clen);
    size_t hole;
    LEntry *e = lslot(t, h, tcp, (const unsigned char *)c, cport, (const unsigned char *)s,
                      sport, tid, (int)clen, &hole);
    if (e == NULL || live_at(lv, e->seq) < 0)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(e->seq);
}

#define LIVE_NS ROW_LEN       /* live_columns: the namespace */
#define LIVE_SEQ (ROW_LEN + 1) /* and the row's seq */

/* A row as the Python tracker keeps it (tracker.py: raw addresses, codes as numbers),
 * then its namespace. */
static PyObject *live_row_of(Live *lv, size_t i)
{
    PyObject *row = PyList_New(ROW_LEN + 1);
    if (row == NULL)
        return NULL;
    for (int col = 0; col <= ROW_LEN; col++) {
        PyObject *v = col == ROW_LEN ? Py_NewRef(lv->tabs[lv->r.nsi[i]].ns)
            : live_value(lv, i, col, 1);
        if (v == NULL) {
            Py_DECREF(row);
            return NULL;
        }
        PyList_SET_ITEM(row, col, v);
    }
    return row;
}

/* live_row(store, seq) -> the row, or None once the buffer evicted it. */
static PyObject *live_row(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *capsule;
    unsigned long long seq;
    if (!PyArg_ParseTuple(args, "OK", &capsule, &seq))
        return NULL;
    Live *lv = PyCapsule_GetPointer(capsule, LIVE_CAPSULE);
    if (lv == NULL)
        return NULL;
    Py_ssize_t i = live_at(lv, seq);
    if (i < 0)
        Py_RETURN_NONE;
    return live_row_of(lv, (size_t)i);
}

/* live_rows(store[, since]) -> (seq of the first, [row, ...]): the buffered rows from
 * seq ``since`` on (all by default): the recorder asks only for what arrived since its
 * last call, not the whole buffer each second. */
static PyObject *live_rows(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *capsule;
    unsigned long long since = 0;
    if (!PyArg_ParseTuple(args, "O|K", &capsule, &since))
        return NULL;
    Live *lv = PyCapsule_GetPointer(capsule, LIVE_CAPSULE);
    if (lv == NULL)
        return NULL;
    uint64_t first = since > lv->head ? (since < lv->tail ? since : lv->tail) : lv->head;
    PyObject *rows = PyList_New((Py_ssize_t)(lv->tail - first));
    if (rows == NULL)
        return NULL;
    for (uint64_t s = first; s < lv->tail; s++) {
        PyObject *row = live_row_of(lv, s % lv->capacity);
        if (row == NULL) {
            Py_DECREF(rows);
            return NULL;
        }
        PyList_SET_ITEM(rows, (Py_ssize_t)(s - first), row);
    }
    return Py_BuildValue("KN", (unsigned long long)first, rows);
}

/* live_columns(store, indices) -> [list per index]: the buffered rows' columns, by
 * index in fastscan.COLUMNS (addresses as text), LIVE_NS, LIVE_SEQ. */
static PyObject *live_columns(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *capsule, *indices;
    if (!PyArg_ParseTuple(args, "OO!", &capsule, &PyTuple_Type, &indices))
        return NULL;
    Live *lv = PyCapsule_GetPointer(capsule, LIVE_CAPSULE);
    if (lv == NULL)
        return NULL;
    Py_ssize_t ncol = PyTuple_GET_SIZE(indices), n = (Py_ssize_t)(lv->tail - lv->head);
    PyObject *out = PyList_New(ncol);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t c = 0; c < ncol; c++) {
        long col = PyLong_AsLong(PyTuple_GET_ITEM(indices, c));
        if (col < 0 || col > LIVE_SEQ) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "live_columns: no such column");
            Py_DECREF(out);
            return NULL;
        }
        PyObject *list = PyList_New(n);
        if (list == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, c, list);
        for (Py_ssize_t i = 0; i < n; i++) {
            uint64_t seq = lv->head + (uint64_t)i;
            size_t at = seq % lv->capacity;
            PyObject *v = col == LIVE_NS ? Py_NewRef(lv->tabs[lv->r.nsi[at]].ns)
                : col == LIVE_SEQ ? PyLong_FromUnsignedLongLong(seq)
                : live_value(lv, at, (int)col, 0);
            if (v == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            PyList_SET_ITEM(list, i, v);
        }
    }
    return out;
}

/* live_stats(store) -> [(ns, buffered, evicted, open), ...] per namespace; and the
 * seq of the oldest buffered row. */
static PyObject *live_stats(PyObject *self, PyObject *capsule)
{
    (void)self;
    Live *lv = PyCapsule_GetPointer(capsule, LIVE_CAPSULE);
    if (lv == NULL)
        return NULL;
    PyObject *out = PyList_New((Py_ssize_t)lv->ntabs);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < lv->ntabs; i++) {
        NsTab *t = &lv->tabs[i];
        PyObject *v = Py_BuildValue("OLLn", t->ns, t->buffered, t->evicted, (Py_ssize_t)t->used);
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, v);
    }
    return Py_BuildValue("NK", out, (unsigned long long)lv->head);
}

static PyMethodDef methods[] = {
    {"scan_pcap", scan_pcap, METH_VARARGS,
     "scan_pcap(scan, buf, pos, big_endian, divisor, extra, linktype, portmap, mode)"
     " -> (pos, records, bad_length)"},
    {"scan_pcap_threads", scan_pcap_threads, METH_VARARGS,
     "scan_pcap_threads(scan, pairs, buf, pos, big_endian, divisor, extra, linktype, portmap,"
     " threads, min_range) -> (pos, records, bad_length)"},
    {"pairs_new", pairs_new, METH_VARARGS, "pairs_new(mode) -> the state of a threaded scan"},
    {"pairs_columns", pairs_columns, METH_VARARGS,
     "pairs_columns(pairs, column_indices) -> [list, ...]"},
    {"pairs_len", pairs_len, METH_O, "pairs_len(pairs) -> transactions"},
    {"live_new", live_new, METH_VARARGS, "live_new(capacity, mode) -> a live capture's store"},
    {"live_ring", live_ring, METH_VARARGS,
     "live_ring(store, ns, scan, ring, block, nblocks, block_size, portmap, ifname, ifnames,"
     " marks, limit) -> (block, packets, errors, last_ts, blocks)"},
    {"live_packet", live_packet, METH_VARARGS,
     "live_packet(store, ns, scan, ts, packet, interface, local, portmap, marks)"},
    {"live_trim", live_trim, METH_VARARGS, "live_trim(store, ns, now, limit) -> forgotten"},
    {"live_forget", live_forget, METH_VARARGS, "live_forget(store, ns)"},
    {"live_find", live_find, METH_VARARGS,
     "live_find(store, ns, tcp, client, cport, server, sport, id) -> seq or None"},
    {"live_row", live_row, METH_VARARGS, "live_row(store, seq) -> row or None"},
    {"live_rows", live_rows, METH_VARARGS, "live_rows(store[, since]) -> (first seq, rows)"},
    {"live_columns", live_columns, METH_VARARGS, "live_columns(store, indices) -> [list, ...]"},
    {"live_stats", live_stats, METH_O,
     "live_stats(store) -> ([(ns, buffered, evicted, open), ...], first seq)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cscan", "Compiled classic-pcap scan for fastscan.Scan.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cscan(void)
{
    plain_init();
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_udp, "udp"}, {&s_tcp, "tcp"}, {&s_unanswered, "unanswered"}, {&s_answered, "answered"},
        {&s_response_only, "response_only"}, {&s_pairing, "pairing"},
        {&s_table, "table"}, {&s_rows, "rows"}, {&s_general, "_general"},
        {&s_message, "_message"}, {&s_messages, "messages"}, {&s_queries, "queries"},
        {&s_responses, "responses"}, {&s_malformed, "malformed"},
        {&s_first_ts, "first_ts"}, {&s_type_a, "A"}, {&s_type_aaaa, "AAAA"},
        {&s_names, "names"}, {&s_duplicates, "duplicates"}, {&s_ranges, "ranges"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
