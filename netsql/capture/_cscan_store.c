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
    if (lv->arena != NULL) {
        for (uint64_t s = lv->head; s < lv->tail; s++)
            row_clear(lv, s % lv->capacity);
        munmap(lv->arena, lv->arena_size);
    }
    for (size_t i = 1; i < lv->nifaces; i++)
        Py_XDECREF(lv->ifaces[i]);
    free(lv->ifaces);
    for (size_t i = 0; i < lv->ntabs; i++) {
        Py_XDECREF(lv->tabs[i].ns);
        ltab_free(&lv->tabs[i]);
    }
    free(lv->tabs);
    free(lv->msgs);
    if (lv->names != NULL)
        munmap(lv->names, lv->ncap);
    free(lv);
}

static void live_destroy(PyObject *capsule)
{
    Live *lv = PyCapsule_GetPointer(capsule, LIVE_CAPSULE);
    if (lv != NULL)
        live_free(lv);
}

/* Zeroed memory the kernel gives as it is first written, so a column a row never
 * writes costs nothing (IPv6 addresses for IPv4, answers and rtt for a query, the str
 * of a name read in C). The pages a row writes are still the capture thread's largest
 * cost after the decoding: the kernel zeroing them (0.38 us of 0.88 a packet with a
 * 128-byte row struct; bench_live, 100,000 queries a second, the 2-core VM). Plain
 * pages, not huge ones: on that VM a fresh huge page cost 1.7-2.5 ns a byte to touch
 * against 0.6 for small pages (which the kernel takes from those just freed), and
 * with huge pages for the whole store the zeroing was 37% of the capture thread
 * against 12%. NULL: no memory. */
void *live_map(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* live_new(capacity, mode) -> the store of a tracker (mode: as scan_pcap's). */
PyObject *live_new(PyObject *self, PyObject *args)
{
    (void)self;
    Py_ssize_t capacity, limit = 65536;
    int mode;
    if (!PyArg_ParseTuple(args, "ni|n", &capacity, &mode, &limit))
        return NULL;
    if (capacity < 1 || mode < 0 || mode > 3 || limit < 1 || limit > 0x7FFFFFFF) {
        PyErr_SetString(PyExc_ValueError, "live_new: bad arguments");
        return NULL;
    }
    Live *lv = calloc(1, sizeof(Live));
    if (lv == NULL)
        return PyErr_NoMemory();
    lv->mode = mode;
    lv->limit = (size_t)limit;
    lv->capacity = (size_t)capacity;
    size_t n = lv->capacity;
    /* The columns, each 64-byte aligned, in one mapping (see live_map). */
    size_t at = 0;
#define COLUMN(f, per) lv->r.f = (void *)at; at += (n * (per) + 63) & ~(size_t)63
    COLUMN(ts, 8); COLUMN(c4, 4); COLUMN(s4, 4); COLUMN(cport, 2); COLUMN(sport, 2);
    COLUMN(tid, 2); COLUMN(flags, 2); COLUMN(qtype, 2); COLUMN(qclass, 2); COLUMN(nsi, 4);
    COLUMN(ifx, 2); COLUMN(meta, 1); COLUMN(rcode, 1); COLUMN(qlen, 1); COLUMN(qoff, 4);
    COLUMN(rtt, 8); COLUMN(c6, 16); COLUMN(s6, 16); COLUMN(qname, sizeof(PyObject *));
    COLUMN(ans, 3 * sizeof(PyObject *));
#undef COLUMN
    unsigned char *arena = live_map(at);
    /* The names' ring: room for names of 24 bytes on average (a power of two), mapped
     * alike; it grows when they are longer. */
    size_t ncap = 1 << 16;
    while (ncap < n * 24 && ncap < ((size_t)1 << 40))
        ncap <<= 1;
    lv->names = live_map(ncap);
    lv->ncap = ncap;
    lv->ifaces = calloc(1, sizeof(PyObject *));
    lv->nifaces = 1;
    if (arena == NULL || lv->names == NULL || lv->ifaces == NULL) {
        if (arena != NULL)
            munmap(arena, at);
        if (lv->names != NULL)
            munmap(lv->names, ncap);
        lv->names = NULL;
        live_free(lv);
        return PyErr_NoMemory();
    }
    lv->arena = arena;
    lv->arena_size = at;
    void **cols[] = {(void **)&lv->r.ts, (void **)&lv->r.rtt, (void **)&lv->r.c4,
                     (void **)&lv->r.s4, (void **)&lv->r.c6, (void **)&lv->r.s6,
                     (void **)&lv->r.cport, (void **)&lv->r.sport, (void **)&lv->r.tid,
                     (void **)&lv->r.qtype, (void **)&lv->r.qclass, (void **)&lv->r.flags,
                     (void **)&lv->r.nsi, (void **)&lv->r.ifx, (void **)&lv->r.meta,
                     (void **)&lv->r.rcode, (void **)&lv->r.qlen, (void **)&lv->r.qoff,
                     (void **)&lv->r.qname, (void **)&lv->r.ans};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        *cols[i] = arena + (size_t)(uintptr_t)*cols[i];
    PyObject *cap = PyCapsule_New(lv, LIVE_CAPSULE, live_destroy);
    if (cap == NULL)
        live_free(lv);
    return cap;
}

/* An empty table of at most `limit` open transactions (a namespace's first queries: it
 * grows as they come); -1: no memory (t's tables then NULL). Its counters stay. */
int ltab_init(NsTab *t, size_t limit)
{
    t->nb = 8;
    t->ecap = 64 < limit ? 64 : limit;
    t->limit = limit;
    t->next = t->used = 0;
    t->opened = 0;
    t->buckets = aligned_alloc(64, t->nb * sizeof(Bucket));
    t->ents = malloc(t->ecap * sizeof(LEntry));
    if (t->buckets == NULL || t->ents == NULL) {
        ltab_free(t);
        return -1;
    }
    memset(t->buckets, 0, t->nb * sizeof(Bucket));
    return 0;
}

void ltab_free(NsTab *t)
{
    free(t->buckets);
    free(t->ents);
    t->buckets = NULL;
    t->ents = NULL;
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
    if (ltab_init(t, lv->limit) < 0)
        return (NsTab *)PyErr_NoMemory();
    t->ns = Py_NewRef(ns);
    *index = (int32_t)lv->ntabs++;
    return t;
}

static inline int key_is(const LEntry *e, uint64_t h, int tcp, const unsigned char *c,
                         unsigned cport, const unsigned char *s, unsigned sport,
                         unsigned tid, int alen)
{
    return e->hash == h && e->tcp == tcp && e->alen == alen && e->cport == cport
        && e->sport == sport && e->tid == tid && !memcmp(e->c, c, (size_t)alen)
        && !memcmp(e->s, s, (size_t)alen);
}

/* The current entry of the key (client c, server s), or NULL. */
LEntry *ltab_find(const NsTab *t, uint64_t h, int tcp, const unsigned char *c,
                  unsigned cport, const unsigned char *s, unsigned sport, unsigned tid,
                  int alen)
{
    size_t mask = t->nb - 1, b = (size_t)(h >> 32) & mask;
    uint16_t tag = (uint16_t)h;
    for (;;) {
        const Bucket *k = &t->buckets[b];
        for (int i = 0; i < BUCKET_SLOTS; i++)
            if (k->tag[i] == tag && k->pos[i]) {
                LEntry *e = &t->ents[k->pos[i] - 1];
                if (key_is(e, h, tcp, c, cport, s, sport, tid, alen))
                    return e;
            }
        if (!k->spill)
            return NULL;
        b = (b + 1) & mask;
    }
}

/* A slot for (tag, pos + 1) from hash h's bucket on. */
static void slot_put(Bucket *buckets, size_t nb, uint64_t h, size_t pos)
{
    size_t mask = nb - 1, b = (size_t)(h >> 32) & mask;
    for (;;) {
        Bucket *k = &buckets[b];
        for (int i = 0; i < BUCKET_SLOTS; i++)
            if (!k->pos[i]) {
                k->tag[i] = (uint16_t)h;
                k->pos[i] = (uint32_t)pos + 1;
                return;
            }
        k->spill++;
        b = (b + 1) & mask;
    }
}

/* The slot of the entry at `pos` (hash h): it is there. `drop`: it is to be emptied
 * (the buckets passed on the way count one key less gone on past them). */
static uint32_t *slot_of(NsTab *t, uint64_t h, size_t pos, int drop)
{
    size_t mask = t->nb - 1, b = (size_t)(h >> 32) & mask;
    for (;;) {
        Bucket *k = &t->buckets[b];
        for (int i = 0; i < BUCKET_SLOTS; i++)
            if (k->pos[i] == (uint32_t)pos + 1)
                return &k->pos[i];
        if (drop)
            k->spill--;
        b = (b + 1) & mask;
    }
}

/* Twice the buckets (a namespace's keys grew past 5 a bucket). */
static int ltab_grow(NsTab *t)
{
    size_t nb = t->nb * 2;
    Bucket *buckets = aligned_alloc(64, nb * sizeof(Bucket));
    if (buckets == NULL)
        return -1;
    memset(buckets, 0, nb * sizeof(Bucket));
    size_t made = t->opened < t->limit ? (size_t)t->opened : t->limit;
    for (size_t p = 0; p < made; p++)
        if (t->ents[p].current)
            slot_put(buckets, nb, t->ents[p].hash, p);
    free(t->buckets);
    t->buckets = buckets;
    t->nb = nb;
    return 0;
}

static inline double entry_last(const LEntry *e)
{
    return isnan(e->q) ? e->r : isnan(e->r) ? e->q : e->q > e->r ? e->q : e->r;
}

/* A new transaction of hash h at time `now` (pairing.Pairing.opened): e, the key's
 * current one (NULL: none), is replaced; the ring's next place is taken, and the
 * transaction opened `limit` openings before, when still current, forgotten (counted
 * in *forgotten when its window had not passed). The new entry (its hash set,
 * current), or NULL: no memory. */
LEntry *ltab_open(NsTab *t, LEntry *e, uint64_t h, double now, long *forgotten)
{
    size_t p = t->next, epos = e != NULL ? (size_t)(e - t->ents) : 0;
    if (p == t->ecap) { /* (while the ring is first filled) */
        size_t cap = t->ecap * 2 < t->limit ? t->ecap * 2 : t->limit;
        LEntry *more = huge(realloc(t->ents, cap * sizeof(LEntry)), cap * sizeof(LEntry));
        if (more == NULL)
            return NULL;
        t->ents = more;
        t->ecap = cap;
        if (e != NULL)
            e = &t->ents[epos];
    }
    if (e == NULL && (t->used + 1) > t->nb * 5 && ltab_grow(t) < 0)
        return NULL;
    LEntry *v = &t->ents[p];
    if (t->opened >= t->limit) { /* the bucket of the one forgotten 8 openings on: a
                                   * miss otherwise (4/5 of this function's time) */
        size_t a = p + 8 < t->limit ? p + 8 : p + 8 - t->limit;
        if (a < t->limit)
            __builtin_prefetch(ltab_bucket(t, t->ents[a].hash), 1);
    }
    if (t->opened >= t->limit && v->current && v != e) { /* forgotten for room */
        *slot_of(t, v->hash, p, 1) = 0;
        t->used--;
        if (now - entry_last(v) < WINDOW)
            (*forgotten)++;
    }
    if (e != NULL) { /* its slot is the new entry's */
        *slot_of(t, h, epos, 0) = (uint32_t)p + 1;
        e->current = 0;
    } else {
        slot_put(t->buckets, t->nb, h, p);
        t->used++;
    }
    t->next = p + 1 == t->limit ? 0 : p + 1;
    t->opened++;
    v->hash = h;
    v->current = 1;
    return v;
}
