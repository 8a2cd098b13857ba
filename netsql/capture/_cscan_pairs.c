/* _cscan_pairs.c: The C pairing table of a threaded scan (Pairs: Txn rows, Entry slots)
 * and the columns made from it (pairs_columns, pairs_len).
 * Part of netsql.capture._cscan (_cscan.c says what it does; _cscan.h lists its files). */
#include "_cscan.h"

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
int decode(PyObject *scan, const Msg *m, PyObject **q, int32_t *qt, int32_t *qc,
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
int pair_msg(Walk *w, const Msg *m)
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
int pair_general(Walk *w, const Msg *g, int lt)
{
    PyObject *seq = general_messages(w->scan, g->ts, g->dns, g->dlen, lt, NULL);
    if (seq == NULL)
        return -1;
    int rc = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq) && rc == 0; i++) {
        Msg m;
        int got = general_msg(seq, i, g->ts, w->ps->mode, &m);
        if (got < 0)
            rc = -1;
        else if (got == 0)
            w->counts.malformed++;
        else
            rc = pair_msg(w, &m);
    }
    Py_DECREF(seq);
    return rc;
}

/* Address text: a direct-mapped cache, as address() has for the bytes. */
static AddrSlot texts[256];

PyObject *address_text(const unsigned char *raw, Py_ssize_t len)
{
    int hit;
    AddrSlot *s = addr_slot(texts, raw, len, &hit);
    if (hit)
        return Py_NewRef(s->obj);
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(len == 4 ? AF_INET : AF_INET6, raw, text, sizeof text) == NULL)
        return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *obj = PyUnicode_FromString(text);
    if (obj != NULL)
        addr_keep(s, raw, len, obj);
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
PyObject *pairs_columns(PyObject *self, PyObject *args)
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

PyObject *pairs_len(PyObject *self, PyObject *capsule)
{
    (void)self;
    Pairs *ps = PyCapsule_GetPointer(capsule, PAIRS_CAPSULE);
    return ps == NULL ? NULL : PyLong_FromSize_t(ps->ntxn);
}
