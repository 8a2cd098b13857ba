/* _cscan_threads.c: scan_pcap_threads: the records of a buffer parsed on several threads,
 * then paired in file order (_cscan_pairs.c).
 * Part of netsql.capture._cscan (_cscan.c says what it does; _cscan.h lists its files). */
#include "_cscan.h"

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
 * messages this module does not decode go to Python as in scan_pcap
 * (Scan._general_messages, Scan._decode). tests/test_fastscan.py compares it with
 * scan_pcap and the pure-Python scan, split at every record. */

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

static void txn_clear(Txn *t)
{
    Py_CLEAR(t->qname);
    for (int j = 0; j < 3; j++)
        Py_CLEAR(t->ans[j]);
}

/* The arrays of a scan reach tens of MB, each page touched once: huge pages where the
 * kernel gives them on request (transparent_hugepage "madvise") spare most of the page
 * faults, which took half the CPU time of a 21 MB file's scan. */
void *huge(void *p, size_t size)
{
    if (p != NULL && size >= (4u << 20)) {
        uintptr_t from = ((uintptr_t)p + (2u << 20) - 1) & ~(uintptr_t)((2u << 20) - 1);
        uintptr_t to = ((uintptr_t)p + size) & ~(uintptr_t)((2u << 20) - 1);
        if (to > from)
            madvise((void *)from, to - from, MADV_HUGEPAGE);
    }
    return p;
}

uint64_t key_hash(int tcp, const unsigned char *c, unsigned cport,
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
void classify(Msg *m, int mode)
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

PyObject *pairs_new(PyObject *self, PyObject *args)
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

PyObject *scan_pcap_threads(PyObject *self, PyObject *args)
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
