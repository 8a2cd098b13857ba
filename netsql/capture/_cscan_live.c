/* _cscan_live.c: Live capture's messages paired into the store: its rows, their names and
 * columns (live_msg, live_general, live_frame).
 * Part of netsql.capture._cscan (_cscan.c says what it does; _cscan.h lists its files). */
#include "_cscan.h"

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

/* A new transaction of the key (client c, server s), replacing e, its current one
 * (NULL: none), the oldest row evicted when the buffer is full: its index, or -1 (no
 * memory). */
static Py_ssize_t live_open(LiveWalk *w, LEntry *e, const Msg *m, int is_query,
                            PyObject *iface)
{
    Live *lv = w->lv;
    Rows *r = &lv->r;
    if ((e = ltab_open(w->tab, e, m->hash, m->ts, &w->counts.forgotten)) == NULL)
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
        size_t cap = lv->ncap * 2, old = lv->ncap - 1;
        unsigned char *more = live_map(cap);
        if (more == NULL)
            return -1;
        for (uint64_t o = lv->nhead; o < lv->ntail;) { /* at most two runs */
            size_t run = lv->ncap - (size_t)(o & old);
            if (run > lv->ntail - o)
                run = (size_t)(lv->ntail - o);
            for (size_t k = 0; k < run;) { /* (the new ring may wrap within it) */
                size_t to = (size_t)((o + k) & (cap - 1)), part = cap - to;
                if (part > run - k)
                    part = run - k;
                memcpy(more + to, lv->names + ((o + k) & old), part);
                k += part;
            }
            o += run;
        }
        munmap(lv->names, lv->ncap);
        lv->names = more;
        lv->ncap = cap;
    }
    size_t at = (size_t)lv->ntail & (lv->ncap - 1);
    Py_ssize_t n;
    if (lv->ncap - at >= 256) { /* room to the ring's end: the text goes straight in */
        n = question_chars(dns, (char *)lv->names + at);
    } else {
        char text[256];
        n = question_chars(dns, text);
        size_t first = lv->ncap - at;
        if (first > (size_t)n)
            first = (size_t)n;
        memcpy(lv->names + at, text, first);
        memcpy(lv->names, text + first, (size_t)n - first);
    }
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
PyObject *live_value(const Live *lv, size_t i, int col, int raw)
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

/* Row i has answers (a list of at least one). */
static inline int has_answers(const Live *lv, size_t i)
{
    PyObject *a = lv->r.ans[3 * i];
    return a != NULL && PyList_Check(a) && PyList_GET_SIZE(a) > 0;
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
int live_msg(LiveWalk *w, const Msg *m, int local, PyObject *iface)
{
    Live *lv = w->lv;
    Rows *r = &lv->r;
    NsTab *tab = w->tab;
    const unsigned char *dns = m->dns;
    unsigned tid = RD16(dns), bits = RD16(dns + 2);
    int need_q = lv->mode & 1, need_r = lv->mode & 2, response = (bits & 0x8000) != 0;
    double ts = m->ts;
    if (!response && local && port_in(w->ports, m->dport) && live_mark(w, m, tid, 0) < 0)
        return -1;
    w->counts.messages++;
    if (!response) {
        w->counts.queries++;
        LEntry *e = ltab_find(tab, m->hash, m->tcp, m->src, m->sport, m->dst, m->dport, tid,
                              m->alen);
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
        Py_ssize_t i = live_open(w, e, m, 1, iface);
        if (i < 0 || live_question(lv, (size_t)i, q, qt, qc, plain ? dns : NULL) < 0) {
            if (i < 0)
                Py_XDECREF(q);
            PyErr_NoMemory();
            return -1;
        }
        return 0;
    }
    w->counts.responses++;
    LEntry *e = ltab_find(tab, m->hash, m->tcp, m->dst, m->dport, m->src, m->sport, tid,
                          m->alen);
    int verdict = e != NULL ? verdict_response(e->q, e->r, ts) : NEW;
    if (verdict == DUPLICATE) {
        w->counts.duplicates++;
        Py_ssize_t first = live_at(lv, e->seq); /* its answers name their addresses again */
        return first >= 0 && has_answers(lv, (size_t)first) ? live_mark(w, m, tid, 1) : 0;
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
        i = live_open(w, e, m, 0, iface);
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
    /* Marked for its answers' addresses (tracker.answered) only when it has some: a
     * response's mark and the row looked up for it cost more than the rest of the
     * message (a tuple, two addresses, a lookup, the row). */
    if (i >= 0 && has_answers(lv, (size_t)i) && live_mark(w, m, tid, 1) < 0)
        return -1;
    return 0;
}

/* A frame for the general decoder (TCP): its messages, each paired. */
int live_general(LiveWalk *w, double ts, const unsigned char *f, Py_ssize_t n,
                 int local, PyObject *iface)
{
    PyObject *seq = general_messages(w->scan, ts, f, n, 101, iface);
    if (seq == NULL)
        return -1;
    int rc = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq) && rc == 0; i++) {
        Msg m;
        int got = general_msg(seq, i, ts, w->lv->mode, &m);
        if (got < 0)
            rc = -1;
        else if (got == 0)
            w->counts.malformed++;
        else
            rc = live_msg(w, &m, local, iface);
    }
    Py_DECREF(seq);
    return rc;
}

/* One IP packet: Scan.feed's loop body (link type 101), into the store. */
int live_frame(LiveWalk *w, double ts, const unsigned char *f, Py_ssize_t n,
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
Live *live_walk(PyObject *capsule, PyObject *ns, PyObject *scan, PyObject *marks,
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

int live_flush(LiveWalk *w)
{
    PyObject *pairing = PyObject_GetAttr(w->scan, s_pairing);
    if (pairing == NULL)
        return -1;
    int rc = flush_counts(w->scan, pairing, &w->counts);
    Py_DECREF(pairing);
    return rc;
}
