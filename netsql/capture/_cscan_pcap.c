/* _cscan_pcap.c: scan_pcap, the classic-pcap walk paired on the Scan's Python table
 * (pairing.py's rule), and the counts every walk adds to its scan.
 * Part of netsql.capture._cscan (_cscan.c says what it does; _cscan.h lists its files). */
#include "_cscan.h"

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
int flush_counts(PyObject *scan, PyObject *pairing, const Counts *c)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (add_counter(scan, s_messages, c->messages) < 0
            || add_counter(scan, s_queries, c->queries) < 0
            || add_counter(scan, s_responses, c->responses) < 0
            || add_counter(scan, s_malformed, c->malformed) < 0
            || add_counter(pairing, s_duplicates, c->duplicates) < 0
            || add_counter(pairing, s_forgotten, c->forgotten) < 0) {
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

PyObject *scan_pcap(PyObject *self, PyObject *args)
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
