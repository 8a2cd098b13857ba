/* _cscan.h: what the files of netsql.capture._cscan share (private to that module).
 *
 * _cscan.c        the Python module: its methods and its interned strings
 * _cscan_dns.c    DNS message decoding: caches, plain questions and answers, parse_frame
 * _cscan_pcap.c   scan_pcap: a classic pcap walk paired on the Scan's Python table
 * _cscan_threads.c scan_pcap_threads: records parsed on several threads
 * _cscan_pairs.c  the C pairing table of a threaded scan and its columns (pairs_*)
 * _cscan_store.c  the live store and its per-namespace pairing tables (ltab_*)
 * _cscan_live.c   live capture: messages paired into the store's rows and names
 * _cscan_ring.c   live_ring (the TPACKET_V3 ring reader) and live_packet
 * _cscan_rows.c   the store read: live_find, live_row(s), live_columns, ...
 */
#ifndef NETSQL_CSCAN_H
#define NETSQL_CSCAN_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <pthread.h>
#include <sys/mman.h>
#include <linux/if_packet.h>

/* The functions shared by these files are not static; hidden, none of them is exported
 * from the extension (only PyInit__cscan is), so their names cannot clash with another
 * library's. */
#pragma GCC visibility push(hidden)

#define MAX_RECORD (1u << 24)
#define ROW_LEN 18
enum { R_TS, R_CADDR, R_CPORT, R_SADDR, R_SPORT, R_TRANSPORT, R_TID, R_QUERY, R_QTYPE,
       R_QCLASS, R_RCODE, R_FLAGS, R_ANSWERS, R_RTT = 15, R_IFACE = 16, R_STATUS = 17 };

extern PyObject *s_udp, *s_tcp, *s_unanswered, *s_answered, *s_response_only, *s_type_a,
    *s_type_aaaa;
extern PyObject *s_names;
extern PyObject *s_pairing, *s_table, *s_rows, *s_general, *s_message;
extern PyObject *s_messages, *s_queries, *s_responses, *s_malformed, *s_first_ts;
extern PyObject *s_duplicates, *s_forgotten, *s_ranges;

/* What a walk counts, added to the scan's (and its pairing's) counters at its end. */
typedef struct {
    long messages, queries, responses, malformed, duplicates, forgotten;
} Counts;

typedef struct {
    PyObject *scan, *pairing, *table, *rows, *names;
    const unsigned char *ports; /* 65536-bit bitmap */
    int mode;
    Counts counts;
} State;

#define RD16(p) ((unsigned)(p)[0] << 8 | (unsigned)(p)[1])

static inline uint32_t rd32(const unsigned char *p, int be)
{
    if (be)
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* pairing.py, mirrored: WINDOW and the verdicts, and the entry of a key in
 * pairing.table, [query ts | None, response ts | None, row, complete]. */
#define WINDOW 10.0
enum { NEW, DUPLICATE, ANSWERS, JOINED };
enum { E_QUERY, E_RESPONSE, E_ROW, E_COMPLETE };

/* The rule itself, on a key's transaction: q and r the times of its query and response
 * (NAN: none), complete: a response came after the query. Every table (the
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

/* What parse_frame found in a record. */
enum { P_SKIP, P_MALFORMED, P_GENERAL, P_MESSAGE };

/* A DNS message's place in a record (or a record for the general decoder). */
typedef struct {
    const unsigned char *src, *dst, *dns;
    Py_ssize_t alen, dlen;
    unsigned sport, dport;
} Found;

typedef struct {
    double ts;
    const unsigned char *src, *dst, *dns;
    uint64_t hash;
    uint32_t dlen;
    uint16_t sport, dport, qend;
    uint8_t kind, alen, tcp, plain; /* kind: P_MESSAGE or P_GENERAL (dns: the frame) */
} Msg;

enum { T_UNANSWERED, T_ANSWERED, T_RESPONSE_ONLY };

typedef struct {
    double ts, rtt; /* rtt NAN: none */
    unsigned char caddr[16], saddr[16];
    uint16_t cport, sport, tid;
    uint8_t alen, tcp, status;
    int32_t qtype, qclass, rcode, flags; /* -1: none */
    PyObject *qname, *ans[3];            /* owned; NULL: none */
} Txn;

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

typedef struct {
    PyObject *scan, *names;
    Pairs *ps;
    Counts counts;
} Walk;

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
 * (load 2.5-3.2; tcpdump -w took 0.16-0.17 us a packet, all of it). Messages this module
 * does not decode go to Python as in scan_pcap_threads (Scan._decode,
 * Scan._general_messages: TCP). tests/test_livescan.py compares it with the
 * pure-Python tracker (tracker.py), which is what runs without a compiler.
 *
 * live_ring(store, ns, scan, ring, block, nblocks, block_size, portmap, ifname, ifnames,
 *           marks, limit) -> (block, packets, errors, last_ts, blocks, full)
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
 * capture. scan (a tracker.LiveScan) gets the counts, as scan_pcap gives them. `full`:
 * the walked blocks the kernel handed over full rather than at their timeout (the
 * traffic outruns a block a timeout: LiveCapture then reads less often). */

#define LIVE_ARPHRD_LOOPBACK 772
#define LIVE_CAPSULE "netsql.capture._cscan.Live"

typedef struct {
    uint64_t hash, seq; /* seq: its transaction (a row while seq >= Live.head) */
    double q, r;        /* NAN: none */
    unsigned char c[16], s[16];
    uint16_t cport, sport, tid;
    uint8_t alen, tcp, current, complete; /* current: the key's transaction now */
} LEntry;

/* Ten slots in one cache line: a key hash's low 16 bits and its entry's place in the
 * ring + 1 (0: empty); and how many keys went on past it (a count apart missed the
 * caches on most lookups: 85% of their time). */
#define BUCKET_SLOTS 10
typedef struct {
    uint16_t tag[BUCKET_SLOTS];
    uint32_t pos[BUCKET_SLOTS];
    uint32_t spill;
} Bucket;
_Static_assert(sizeof(Bucket) == 64, "a bucket is a cache line");

/* A namespace's open transactions (pairing.Pairing with a limit, mirrored): a ring of
 * `limit` entries in order of opening, each opening overwriting the one `limit`
 * openings before it (forgotten, and counted when its window had not passed), and
 * an index of the current ones: buckets of ten slots (a key's bucket from its
 * hash's high bits; one that is full passes a new key on to the next, and counts it
 * in `spill` so that lookups go on there). Measured (bench_live, 100,000 new
 * queries a second): the table this replaced (linear probing, deletions shifting
 * back, a trim each batch deleting the oldest half past the limit) cost 0.09 us a
 * packet of the capture thread's 0.42 (trim 0.04, the rest the probes); here a
 * lookup reads one line and the entry it finds, an opening one line more for the
 * entry it overwrites. */
typedef struct {
    PyObject *ns;     /* owned: the namespace's inode, or None */
    Bucket *buckets;  /* nb of them (a power of two): at most 5 current keys a bucket */
    size_t nb;
    LEntry *ents;     /* the ring: ecap entries made so far (up to limit) */
    size_t ecap, limit, next, used; /* next: the place of the next opening */
    uint64_t opened;  /* openings so far (the ring is full from `limit` on) */
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
 * tail), all in one mapping (Live.arena; _cscan_store.c's live_map says why). */
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
    unsigned char *names; /* mapped (live_map) */
    size_t ncap;
    size_t limit; /* open transactions a namespace keeps (NsTab.limit) */
    unsigned char *arena; /* the columns' mapping (Rows points into it) */
    size_t arena_size;
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

/* The index of row seq, or -1 once the buffer evicted it. */
static inline Py_ssize_t live_at(const Live *lv, uint64_t seq)
{
    return seq >= lv->head && seq < lv->tail ? (Py_ssize_t)(seq % lv->capacity) : -1;
}

/* _cscan_dns.c */
PyObject *int16(unsigned v);
PyObject *address(const unsigned char *raw, Py_ssize_t len);
PyObject *new_row(double ts, PyObject *caddr, PyObject *cport, PyObject *saddr,
                  PyObject *sport, PyObject *tid, PyObject *flags, PyObject *status);
int row_ts(PyObject *row, double *out);
void plain_init(void);
Py_ssize_t question_end(const unsigned char *dns, Py_ssize_t n);
PyObject *name_object(const char *text, Py_ssize_t t);
Py_ssize_t question_chars(const unsigned char *dns, char *text);
PyObject *question_text(const unsigned char *dns, Py_ssize_t qend);
int plain_question(const unsigned char *dns, Py_ssize_t n, PyObject **name,
                   unsigned *qtype, unsigned *qclass, Py_ssize_t *qend);
int answers_simple(const unsigned char *dns, Py_ssize_t n, Py_ssize_t qend);
int simple_answers(const unsigned char *dns, Py_ssize_t n, Py_ssize_t qend,
                   PyObject *out[3]);
int set_question(PyObject *row, PyObject *qname, unsigned qtype, unsigned qclass);
int parse_frame(int lt, const unsigned char *f, Py_ssize_t n,
                const unsigned char *ports, Found *out);

/* _cscan_pcap.c */
int flush_counts(PyObject *scan, PyObject *pairing, const Counts *c);
PyObject *scan_pcap(PyObject *self, PyObject *args);

/* _cscan_threads.c */
void *huge(void *p, size_t size);
uint64_t key_hash(int tcp, const unsigned char *c, unsigned cport,
                  const unsigned char *s, unsigned sport, unsigned tid, int alen);
/* A 256-slot direct-mapped cache of objects made from 4- or 16-byte addresses (the
 * bytes objects in _cscan_dns.c, the text in _cscan_pairs.c): addr_slot gives the slot
 * of ``raw`` and whether it holds it; addr_keep puts ``obj`` there. */
typedef struct { Py_ssize_t len; unsigned char raw[16]; PyObject *obj; } AddrSlot;

static inline AddrSlot *addr_slot(AddrSlot *cache, const unsigned char *raw,
                                  Py_ssize_t len, int *hit)
{
    unsigned h = 2166136261u;
    for (Py_ssize_t i = 0; i < len; i++)
        h = (h ^ raw[i]) * 16777619u;
    AddrSlot *s = &cache[(h ^ h >> 8 ^ h >> 16) & 255];
    *hit = s->obj != NULL && s->len == len && !memcmp(s->raw, raw, (size_t)len);
    return s;
}

static inline void addr_keep(AddrSlot *s, const unsigned char *raw, Py_ssize_t len,
                             PyObject *obj)
{
    Py_XSETREF(s->obj, Py_NewRef(obj));
    s->len = len;
    memcpy(s->raw, raw, (size_t)len);
}

void classify(Msg *m, int mode);
PyObject *general_messages(PyObject *scan, double ts, const unsigned char *f,
                           Py_ssize_t n, int lt, PyObject *iface);
int general_msg(PyObject *seq, Py_ssize_t i, double ts, int mode, Msg *m);
PyObject *pairs_new(PyObject *self, PyObject *args);
PyObject *scan_pcap_threads(PyObject *self, PyObject *args);

/* _cscan_pairs.c */
int decode(PyObject *scan, const Msg *m, PyObject **q, int32_t *qt, int32_t *qc,
           PyObject **answers);
int pair_msg(Walk *w, const Msg *m);
int pair_general(Walk *w, const Msg *g, int lt);
PyObject *address_text(const unsigned char *raw, Py_ssize_t len);
PyObject *pairs_columns(PyObject *self, PyObject *args);
PyObject *pairs_len(PyObject *self, PyObject *capsule);

/* _cscan_store.c */
void row_clear(Live *lv, size_t i);
PyObject *live_new(PyObject *self, PyObject *args);
int ltab_init(NsTab *t, size_t limit);
NsTab *live_tab(Live *lv, PyObject *ns, int make, int32_t *index);
void ltab_free(NsTab *t);
LEntry *ltab_find(const NsTab *t, uint64_t h, int tcp, const unsigned char *c,
                  unsigned cport, const unsigned char *s, unsigned sport, unsigned tid,
                  int alen);
LEntry *ltab_open(NsTab *t, LEntry *e, uint64_t h, double now, long *forgotten);
static inline const Bucket *ltab_bucket(const NsTab *t, uint64_t h)
{
    return &t->buckets[(size_t)(h >> 32) & (t->nb - 1)];
}

/* _cscan_live.c */
PyObject *live_value(const Live *lv, size_t i, int col, int raw);
void *live_map(size_t size);
int live_msg(LiveWalk *w, const Msg *m, int local, PyObject *iface);
int live_general(LiveWalk *w, double ts, const unsigned char *f, Py_ssize_t n,
                 int local, PyObject *iface);
int live_frame(LiveWalk *w, double ts, const unsigned char *f, Py_ssize_t n,
               int local, PyObject *iface);
Live *live_walk(PyObject *capsule, PyObject *ns, PyObject *scan, PyObject *marks,
                const unsigned char *ports, LiveWalk *w);
int live_flush(LiveWalk *w);

/* _cscan_ring.c */
PyObject *live_ring(PyObject *self, PyObject *args);
PyObject *live_packet(PyObject *self, PyObject *args);

/* _cscan_rows.c */
PyObject *live_forget(PyObject *self, PyObject *args);
PyObject *live_answers(PyObject *self, PyObject *args);
PyObject *live_find(PyObject *self, PyObject *args);
PyObject *live_row(PyObject *self, PyObject *args);
PyObject *live_rows(PyObject *self, PyObject *args);
PyObject *live_columns(PyObject *self, PyObject *args);
PyObject *live_stats(PyObject *self, PyObject *capsule);

#pragma GCC visibility pop

#endif
