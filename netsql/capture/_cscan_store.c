/* _cscan_store.c: The live store (live_new: rows in C columns) and its pairing table per
 * network namespace (NsTab: ltab_*).
 * Part of netsql.capture._cscan (_cscan.c says what it does; _cscan.h lists its files). */
#include "_cscan.h"

void row_clear(Live *lv, size_t i)
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
PyObject *live_new(PyObject *self, PyObject *args)
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
int ltab_init(NsTab *t)
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
NsTab *live_tab(Live *lv, PyObject *ns, int make, int32_t *index)
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
LEntry *lslot(NsTab *t, uint64_t h, int tcp, const unsigned char *c, unsigned cport,
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
LEntry *ltab_new(NsTab *t, size_t hole, uint64_t h)
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

int ltab_grow(NsTab *t)
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
int ltab_opened(NsTab *t, uint64_t seq, uint32_t entry)
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
size_t ltab_trim(NsTab *t, double now, size_t limit)
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
