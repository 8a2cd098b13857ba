/* _cscan_rows.c: The live store read: live_forget, live_find,
 * live_row, live_answers, live_rows, live_columns, live_stats.
 * Part of netsql.capture._cscan (_cscan.c says what it does; _cscan.h lists its files). */
#include "_cscan.h"

/* live_forget(store, ns): namespace ns went away: its open transactions with it. */
PyObject *live_forget(PyObject *self, PyObject *args)
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
        if (ltab_init(t, old.limit) < 0) {
            *t = old;
            return PyErr_NoMemory();
        }
        ltab_free(&old);
    }
    Py_RETURN_NONE;
}

/* live_find(store, ns, tcp, client, cport, server, sport, id) -> the buffered row (its
 * seq) of the key's transaction, or None. */
PyObject *live_find(PyObject *self, PyObject *args)
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
    LEntry *e = ltab_find(t, h, tcp, (const unsigned char *)c, cport,
                          (const unsigned char *)s, sport, tid, (int)clen);
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

/* The store and the index of the buffered row of arguments (store, seq): the index,
 * -1 once the buffer evicted the row, -2 on error. */
static Py_ssize_t row_args(PyObject *args, Live **lv)
{
    PyObject *capsule;
    unsigned long long seq;
    if (!PyArg_ParseTuple(args, "OK", &capsule, &seq))
        return -2;
    *lv = PyCapsule_GetPointer(capsule, LIVE_CAPSULE);
    return *lv == NULL ? -2 : live_at(*lv, seq);
}

/* live_row(store, seq) -> the row, or None once the buffer evicted it. */
PyObject *live_row(PyObject *self, PyObject *args)
{
    (void)self;
    Live *lv;
    Py_ssize_t i = row_args(args, &lv);
    if (i < 0) {
        if (i == -2)
            return NULL;
        Py_RETURN_NONE;
    }
    return live_row_of(lv, (size_t)i);
}

/* live_rows(store[, since]) -> (seq of the first, [row, ...]): the buffered rows from
 * seq ``since`` on (all by default): the recorder asks only for what arrived since its
 * last call, not the whole buffer each second. */
PyObject *live_rows(PyObject *self, PyObject *args)
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
PyObject *live_columns(PyObject *self, PyObject *args)
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

/* live_answers(store, seq) -> (answered at, query, answers, types, ttls, namespace) of
 * buffered row seq when it has answers, else None: what tracker.answered reads, without
 * making the whole row. */
PyObject *live_answers(PyObject *self, PyObject *args)
{
    (void)self;
    Live *lv;
    Py_ssize_t i = row_args(args, &lv);
    if (i == -2)
        return NULL;
    PyObject **ans = i < 0 ? NULL : &lv->r.ans[3 * (size_t)i];
    if (ans == NULL || ans[0] == NULL || !PyList_Check(ans[0]) || PyList_GET_SIZE(ans[0]) == 0)
        Py_RETURN_NONE;
    const Rows *r = &lv->r;
    double at = r->ts[i] + ((r->meta[i] & M_STATUS) == T_ANSWERED ? r->rtt[i] : 0.0);
    PyObject *query = live_value(lv, (size_t)i, R_QUERY, 1);
    if (query == NULL)
        return NULL;
    return Py_BuildValue("dNOOOO", at, query, ans[0], ans[1] ? ans[1] : Py_None,
                         ans[2] ? ans[2] : Py_None, lv->tabs[r->nsi[i]].ns);
}

/* live_stats(store) -> [(ns, buffered, evicted, open), ...] per namespace; and the
 * seq of the oldest buffered row. */
PyObject *live_stats(PyObject *self, PyObject *capsule)
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
