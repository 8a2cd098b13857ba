/* _cscan_dns.c: DNS message decoding: cached ints, addresses and names, plain questions and
 * answers, and parse_frame (link, IP and UDP headers of one record).
 * Part of netsql.capture._cscan (_cscan.c says what it does; _cscan.h lists its files). */
#include "_cscan.h"

/* Ports and transaction ids repeat: one int object per value, made on first use. */
static PyObject *ints[65536];

PyObject *int16(unsigned v)
{
    if (ints[v] == NULL)
        ints[v] = PyLong_FromLong(v);
    return Py_XNewRef(ints[v]);
}

/* So do addresses: a direct-mapped cache of their bytes objects. */
static AddrSlot addrs[256];

PyObject *address(const unsigned char *raw, Py_ssize_t len)
{
    int hit;
    AddrSlot *s = addr_slot(addrs, raw, len, &hit);
    if (hit)
        return Py_NewRef(s->obj);
    PyObject *obj = PyBytes_FromStringAndSize((const char *)raw, len);
    if (obj != NULL)
        addr_keep(s, raw, len, obj);
    return obj;
}

/* Set row[i] (a new list's slot holding None) to a new reference. */
static void put(PyObject *row, int i, PyObject *value)
{
    Py_DECREF(PyList_GET_ITEM(row, i));
    PyList_SET_ITEM(row, i, value);
}

PyObject *new_row(double ts, PyObject *caddr, PyObject *cport, PyObject *saddr,
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

int row_ts(PyObject *row, double *out)
{
    *out = PyFloat_AsDouble(PyList_GET_ITEM(row, R_TS));
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* Bytes a name shows as themselves (dnswire._PLAIN without the separator): a table
 * (strchr per byte of every name was 5% of a live capture's thread). */
static unsigned char plain_bytes[256];

void plain_init(void)
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
Py_ssize_t question_end(const unsigned char *dns, Py_ssize_t n)
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
PyObject *name_object(const char *text, Py_ssize_t t)
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
Py_ssize_t question_chars(const unsigned char *dns, char *text)
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
PyObject *question_text(const unsigned char *dns, Py_ssize_t qend)
{
    char text[256];
    (void)qend;
    return name_object(text, question_chars(dns, text));
}

/* The first question when it is plain (question_end); its text lower-cased as
 * dnswire.decode_dns gives it. Returns 1 (found), 0 (not plain: Python decodes the
 * message) or -1 (error). */
int plain_question(const unsigned char *dns, Py_ssize_t n, PyObject **name,
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
int answers_simple(const unsigned char *dns, Py_ssize_t n, Py_ssize_t qend)
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
int simple_answers(const unsigned char *dns, Py_ssize_t n, Py_ssize_t qend,
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

int set_question(PyObject *row, PyObject *qname, unsigned qtype, unsigned qclass)
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

/* Scan.feed's loop body without Python: link, IP and UDP headers of one record. No
 * Python object is touched (the threads of scan_pcap_threads call it). */
int parse_frame(int lt, const unsigned char *f, Py_ssize_t n,
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

/* The general decoder's (TCP) messages of one frame: Scan._general_messages(ts, frame,
 * lt, iface) as a fast sequence (NULL: an error is set). One copy for the file scan
 * (pair_general) and the live store (live_general). */
PyObject *general_messages(PyObject *scan, double ts, const unsigned char *f,
                           Py_ssize_t n, int lt, PyObject *iface)
{
    PyObject *fr = PyBytes_FromStringAndSize((const char *)f, n);
    PyObject *got = fr ? PyObject_CallMethod(scan, "_general_messages", "dOiO", ts, fr, lt,
                                             iface ? iface : Py_None) : NULL;
    Py_XDECREF(fr);
    if (got == NULL)
        return NULL;
    PyObject *seq = PySequence_Fast(got, "Scan._general_messages: not a sequence");
    Py_DECREF(got);
    return seq;
}

/* Message ``i`` of general_messages' sequence into ``m``, classified by ``mode``: 1 made,
 * 0 shorter than a DNS header (malformed), -1 an error set. The sequence owns the
 * bytes ``m`` points into. */
int general_msg(PyObject *seq, Py_ssize_t i, double ts, int mode, Msg *m)
{
    /* (source address bytes, port, destination address bytes, port, tcp, payload) */
    const char *src, *dst, *dns;
    Py_ssize_t slen, dlen, len;
    int sport, dport, tcp;
    if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "y#iy#ipy#", &src, &slen,
                          &sport, &dst, &dlen, &dport, &tcp, &dns, &len))
        return -1;
    if (slen != dlen || (slen != 4 && slen != 16)) {
        PyErr_SetString(PyExc_ValueError, "Scan._general_messages: bad address");
        return -1;
    }
    if (len < 12)
        return 0;
    memset(m, 0, sizeof *m);
    m->ts = ts;
    m->src = (const unsigned char *)src;
    m->dst = (const unsigned char *)dst;
    m->dns = (const unsigned char *)dns;
    m->alen = (uint8_t)slen;
    m->dlen = (uint32_t)len;
    m->sport = (uint16_t)sport;
    m->dport = (uint16_t)dport;
    m->tcp = (uint8_t)tcp;
    m->kind = P_MESSAGE;
    classify(m, mode);
    return 1;
}
