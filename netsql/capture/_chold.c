/* _chold: the query hold's per-packet path, compiled (holder.py holds the pure-Python
 * twin, lookup_packets, and tests/test_attribution.py compares the two on real sockets).
 *
 * Why C: a held lookup waits for the helper to wake, name the sender and give the
 * verdict. Measured on this shared 2-core VM: the Python helper's per-packet path
 * (select, recv, netlink parsing, decode_frame, sock_diag, the hinted readlinks, the
 * name, the report) took 55-100 us, against an unheld lookup over a veth pair of 25
 * us in all; here it takes 7-9 us (sock_diag 3.5, a readlinkat and a pread of the
 * name 2.5, in the helper, timed per packet), and a loop that only gives verdicts
 * already adds 7-9 us at the median (`bench_hold.py --floor`). Waking Python for each
 * packet, even after the verdict, put its work on the CPUs the client and its
 * resolver wait for; hence the thread, the batched reports and the real-time policy.
 *
 * start(nlfd, queue, out_fd, report_fd, linger_us, age_us, rt_limit), stop()
 *     Serve the NFQUEUE netlink socket nlfd from a thread of this module's, which never
 *     takes the GIL (the helper's Python work, and its process-events thread, cannot
 *     delay a verdict) and runs real-time while it names at most rt_limit packets a
 *     second (realtime() below; 0: never). For each held packet: the sender's
 *     4-tuple, its socket (sock_diag, exact), its owner where this module saw it
 *     before (the inode's last pid/fd, then the hinted fds of the latest senders: one
 *     readlink each) and that owner's name, all while it is held; then the verdict (NF_ACCEPT), unless the
 *     owner was not found: that packet stays held for the caller to name (a scan of
 *     candidates) and let go (verdict()). A named sender's report (holder.py's JSON
 *     line) goes to report_fd, any other result to out_fd (a pipe; decode() reads
 *     it), both non-blocking, in batches: after linger_us without a packet, age_us
 *     after the batch's first, or at once when one waits for a scan. stop() hands the
 *     last batch over and joins the thread.
 *     A result: (kind, packet_id, key, inode, uid, pid, comm), kind PASSED (verdict
 *     given, nothing named), NAMED (verdict given) or SCAN (no verdict yet); key
 *     (transport, src, sport, dst, dport) or None; uid the packet's own (NFQA_UID) or
 *     else its socket's, or None.
 * report(msg) -> list
 *     lookup's named senders' report lines (bytes; None where left to Python), as the
 *     serving thread writes them: the differential test's entry.
 * set_naming(on), counts() -> (held, passed, dropped), recent() -> [pid, ...]
 *     Name packets or only let them go (a flood pause); packets since start() named,
 *     let go unnamed, results dropped because out_fd was full (a SCAN among them is
 *     let go here, unnamed); the latest senders, latest first (the scan's first
 *     candidates).
 * passthrough(nlfd, queue, stopfd) -> int
 *     The floor: a verdict for every packet at once, nothing parsed but the packet id,
 *     until stopfd is readable; returns how many packets were let go.
 * lookup(msg) -> list
 *     The results for the packets of one netlink datagram, with no verdict sent (kind
 *     as the serving thread would give): the differential test's entry.
 * verdict(nlfd, queue, packet_id), hit(pid, fd, inode), reset()
 *     Let one packet go; tell where an inode was found (by the caller's scan); forget
 *     every hint.
 */
#define _GNU_SOURCE /* ppoll */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/sock_diag.h>

#define VERDICT_ACCEPT 1 /* NF_ACCEPT */
#define KIND_PASSED 0
#define KIND_NAMED 1
#define KIND_SCAN 2
#define MAX_BATCH 256
#define RECENT 64 /* like holder.py's recent senders */
#define INODE_SLOTS 4096 /* like FdHints.max_inodes */
#define HINT_FDS 4

typedef struct {
    int kind;
    uint32_t packet_id;
    int have_key;
    int tcp;
    char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN];
    unsigned sport, dport;
    unsigned long long inode;
    long long uid; /* -1: none */
    int pid; /* 0: none */
    char comm[64];
    int have_comm;
} Result;

/* -- hints: where senders' sockets were found (owners.FdHints' rule) ------------------- */
typedef struct {
    unsigned long long inode;
    int pid, fd;
} InodeSlot;
typedef struct {
    int pid, nfds;
    int fds[HINT_FDS];
    /* /proc/PID/fd and /proc/PID/comm, kept open: a readlinkat there and a pread of the
     * name cost 2.5 us, their paths' readlink and open/read/close 7.5 us (this VM). */
    int dirfd, commfd;
} Recent;

static InodeSlot inode_slots[INODE_SLOTS];
static Recent recent[RECENT];
static int nrecent;
static int diag_fd[2] = {-1, -1}; /* AF_INET, AF_INET6 */
/* The hints and the sock_diag sockets: the serving thread's, and hit()'s and lookup()'s */
static pthread_mutex_t hints_lock = PTHREAD_MUTEX_INITIALIZER;

static void detach(Recent *r)
{
    if (r->dirfd >= 0)
        close(r->dirfd);
    if (r->commfd >= 0)
        close(r->commfd);
    r->dirfd = r->commfd = -1;
}

/* Open the process's /proc files (again: hit() says the pid may have been reused). */
static void attach(Recent *r)
{
    char path[40];
    detach(r);
    snprintf(path, sizeof path, "/proc/%d/fd", r->pid);
    r->dirfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    snprintf(path, sizeof path, "/proc/%d/comm", r->pid);
    r->commfd = open(path, O_RDONLY | O_CLOEXEC);
}

static Recent *recent_of(int pid)
{
    for (int i = 0; i < nrecent; i++)
        if (recent[i].pid == pid)
            return &recent[i];
    return NULL;
}

/* pid first among the latest senders (fd first among its hinted fds when fd >= 0);
 * fresh: open its /proc files again. */
static void to_front(int pid, int fd, int fresh)
{
    Recent r = {pid, 0, {0}, -1, -1};
    int i, at = nrecent < RECENT ? nrecent : RECENT - 1;
    for (i = 0; i < nrecent; i++)
        if (recent[i].pid == pid) {
            r = recent[i];
            at = i;
            break;
        }
    if (i == nrecent) {
        if (nrecent < RECENT)
            nrecent++;
        else
            detach(&recent[RECENT - 1]); /* the oldest goes */
        fresh = 1;
    }
    memmove(&recent[1], &recent[0], at * sizeof(Recent));
    if (fd >= 0) {
        int fds[HINT_FDS], n = 0;
        fds[n++] = fd;
        for (int j = 0; j < r.nfds && n < HINT_FDS; j++)
            if (r.fds[j] != fd)
                fds[n++] = r.fds[j];
        memcpy(r.fds, fds, sizeof fds);
        r.nfds = n;
    }
    if (fresh)
        attach(&r);
    recent[0] = r;
}

static void remember(int pid, int fd, unsigned long long inode, int fresh)
{
    InodeSlot *s = &inode_slots[inode % INODE_SLOTS];
    s->inode = inode;
    s->pid = pid;
    s->fd = fd;
    to_front(pid, fd, fresh);
}

static int holds(int pid, int fd, unsigned long long inode)
{
    char path[64], target[64], want[40];
    Recent *r = recent_of(pid);
    ssize_t n;
    if (r && r->dirfd >= 0) {
        snprintf(path, sizeof path, "%d", fd);
        n = readlinkat(r->dirfd, path, target, sizeof target - 1);
    } else {
        snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, fd);
        n = readlink(path, target, sizeof target - 1);
    }
    if (n <= 0)
        return 0;
    int w = snprintf(want, sizeof want, "socket:[%llu]", inode);
    return n == w && memcmp(target, want, n) == 0;
}

/* The owner by hints alone (owners.hinted_owner's rule); 0 when not found. */
static int hinted_owner(unsigned long long inode)
{
    InodeSlot *s = &inode_slots[inode % INODE_SLOTS];
    if (s->inode == inode && holds(s->pid, s->fd, inode)) {
        to_front(s->pid, -1, 0);
        return s->pid;
    }
    for (int i = 0; i < nrecent; i++) {
        Recent r = recent[i];
        if (!r.nfds)
            continue;
        int top = r.fds[0];
        for (int j = 1; j < r.nfds; j++)
            if (r.fds[j] > top)
                top = r.fds[j];
        int guesses[HINT_FDS + 3], n = 0;
        for (int j = 0; j < r.nfds; j++)
            guesses[n++] = r.fds[j];
        for (int k = 1; k <= 3; k++)
            guesses[n++] = top + k;
        for (int j = 0; j < n; j++)
            if (holds(r.pid, guesses[j], inode)) {
                remember(r.pid, guesses[j], inode, 0);
                return r.pid;
            }
    }
    return 0;
}

static int read_comm(int pid, char *out, size_t size)
{
    Recent *r = recent_of(pid);
    ssize_t n = -1;
    if (r && r->commfd >= 0)
        n = pread(r->commfd, out, size - 1, 0);
    if (n <= 0) { /* not kept open, or that process is gone: by its path */
        char path[40];
        snprintf(path, sizeof path, "/proc/%d/comm", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return 0;
        n = read(fd, out, size - 1);
        close(fd);
    }
    if (n < 0)
        return 0;
    while (n > 0 && out[n - 1] == '\n')
        n--;
    out[n] = 0;
    return 1;
}

/* -- the held packet ------------------------------------------------------------------ */
static int parse_ip(const unsigned char *p, size_t len, Result *r, int *family,
                    unsigned char *saddr, unsigned char *daddr)
{
    size_t off, end;
    int proto;
    if (len < 1)
        return 0;
    if (p[0] >> 4 == 4) {
        if (len < 20)
            return 0;
        size_t ihl = (p[0] & 0x0F) * 4, total = p[2] << 8 | p[3];
        if (total == 0)
            total = len;
        if (ihl < 20 || total < ihl || ((p[6] << 8 | p[7]) & 0x1FFF))
            return 0;
        proto = p[9];
        memcpy(saddr, p + 12, 4);
        memcpy(daddr, p + 16, 4);
        inet_ntop(AF_INET, p + 12, r->src, sizeof r->src);
        inet_ntop(AF_INET, p + 16, r->dst, sizeof r->dst);
        *family = AF_INET;
        off = ihl;
        end = total < len ? total : len;
    } else if (p[0] >> 4 == 6) {
        if (len < 40)
            return 0;
        size_t plen = p[4] << 8 | p[5];
        int nh = p[6];
        memcpy(saddr, p + 8, 16);
        memcpy(daddr, p + 24, 16);
        inet_ntop(AF_INET6, p + 8, r->src, sizeof r->src);
        inet_ntop(AF_INET6, p + 24, r->dst, sizeof r->dst);
        *family = AF_INET6;
        end = 40 + plen < len ? 40 + plen : len;
        off = 40;
        proto = -1;
        for (int i = 0; i < 8 && proto < 0; i++) {
            if (nh == 6 || nh == 17)
                proto = nh;
            else if (off + 4 > len)
                return 0;
            else if (nh == 0 || nh == 43 || nh == 60) {
                nh = p[off];
                off += (p[off + 1] + 1) * 8;
            } else if (nh == 44) {
                if ((p[off + 2] << 8 | p[off + 3]) & 0xFFF8)
                    return 0;
                nh = p[off];
                off += 8;
            } else if (nh == 51) {
                nh = p[off];
                off += (p[off + 1] + 2) * 4;
            } else
                return 0;
        }
        if (proto < 0)
            return 0;
    } else
        return 0;
    if (proto == 17) {
        if (off + 8 > end)
            return 0;
    } else if (proto == 6) {
        if (off + 20 > end)
            return 0;
        size_t doff = (p[off + 12] >> 4) * 4;
        if (doff < 20 || off + doff > end)
            return 0;
    } else
        return 0;
    r->tcp = proto == 6;
    r->sport = p[off] << 8 | p[off + 1];
    r->dport = p[off + 2] << 8 | p[off + 3];
    r->have_key = 1;
    return 1;
}

static int diag_socket(int family)
{
    int *fd = &diag_fd[family == AF_INET6];
    if (*fd < 0)
        *fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    return *fd;
}

/* sockdiag.find's rule: the kernel's own lookup of this exact 4-tuple; UDP's reads the
 * ids the other way round, so both orders are tried and the local port is checked. */
static int find_socket(int family, int tcp, const unsigned char *saddr, unsigned sport,
                       const unsigned char *daddr, unsigned dport,
                       unsigned long long *inode, long long *uid)
{
    int fd = diag_socket(family);
    if (fd < 0)
        return 0;
    size_t alen = family == AF_INET ? 4 : 16;
    for (int order = 0; order < 2; order++) {
        int local_first = tcp ? order == 0 : order == 1;
        struct {
            struct nlmsghdr nh;
            struct inet_diag_req_v2 req;
        } m;
        memset(&m, 0, sizeof m);
        m.nh.nlmsg_len = sizeof m;
        m.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
        m.nh.nlmsg_flags = NLM_F_REQUEST;
        m.nh.nlmsg_seq = 2;
        m.req.sdiag_family = family;
        m.req.sdiag_protocol = tcp ? IPPROTO_TCP : IPPROTO_UDP;
        m.req.idiag_states = 0xFFFFFFFF;
        m.req.id.idiag_sport = htons(local_first ? sport : dport);
        m.req.id.idiag_dport = htons(local_first ? dport : sport);
        memcpy(m.req.id.idiag_src, local_first ? saddr : daddr, alen);
        memcpy(m.req.id.idiag_dst, local_first ? daddr : saddr, alen);
        m.req.id.idiag_cookie[0] = m.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
        if (send(fd, &m, sizeof m, 0) < 0)
            return 0;
        union {
            struct nlmsghdr nh;
            char buf[8192];
        } u;
        ssize_t n = recv(fd, u.buf, sizeof u.buf, 0);
        if (n < (ssize_t)NLMSG_HDRLEN)
            continue;
        struct nlmsghdr *h = &u.nh;
        if (!NLMSG_OK(h, (size_t)n) || h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
            h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
            continue;
        struct inet_diag_msg *d = NLMSG_DATA(h);
        if (ntohs(d->id.idiag_sport) != sport)
            continue;
        *inode = d->idiag_inode;
        *uid = d->idiag_uid;
        return 1;
    }
    return 0;
}

/* The sender of one held packet, named by hints; r->kind says what is left to do. */
static void name_packet(const unsigned char *payload, size_t plen, long long pkt_uid,
                        Result *r)
{
    unsigned char saddr[16], daddr[16];
    int family;
    r->kind = KIND_PASSED;
    if (!parse_ip(payload, plen, r, &family, saddr, daddr))
        return;
    long long sock_uid = -1;
    if (!find_socket(family, r->tcp, saddr, r->sport, daddr, r->dport, &r->inode, &sock_uid)
        || !r->inode)
        return;
    r->uid = pkt_uid >= 0 ? pkt_uid : sock_uid;
    r->pid = hinted_owner(r->inode);
    if (!r->pid) {
        r->kind = KIND_SCAN;
        return;
    }
    r->have_comm = read_comm(r->pid, r->comm, sizeof r->comm);
    r->kind = KIND_NAMED;
}

static int send_verdict(int fd, unsigned queue, uint32_t id)
{
    struct {
        struct nlmsghdr nh;
        struct nfgenmsg g;
        struct nlattr a;
        struct nfqnl_msg_verdict_hdr v;
    } m;
    memset(&m, 0, sizeof m);
    m.nh.nlmsg_len = sizeof m;
    m.nh.nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT;
    m.nh.nlmsg_flags = NLM_F_REQUEST;
    m.g.nfgen_family = AF_UNSPEC;
    m.g.version = NFNETLINK_V0;
    m.g.res_id = htons(queue);
    m.a.nla_len = sizeof m.a + sizeof m.v;
    m.a.nla_type = NFQA_VERDICT_HDR;
    m.v.verdict = htonl(VERDICT_ACCEPT);
    m.v.id = htonl(id);
    return send(fd, &m, sizeof m, 0) < 0 ? -1 : 0;
}

/* Each held packet of one datagram: named (when name), then let go (when fd >= 0 and
 * its owner was found or need not be). Returns how many results were added. */
static int handle(const char *buf, size_t n, int name, int keep_scan, int fd,
                  unsigned queue, Result *out, int room)
{
    int count = 0, left = (int)n; /* signed: NLMSG_NEXT goes below 0 past the end */
    const struct nlmsghdr *h = (const struct nlmsghdr *)buf;
    for (; NLMSG_OK(h, left) && count < room; h = NLMSG_NEXT(h, left)) {
        if (h->nlmsg_type != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET) ||
            h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nfgenmsg)))
            continue;
        const char *a = (const char *)NLMSG_DATA(h) + sizeof(struct nfgenmsg);
        const char *end = (const char *)h + h->nlmsg_len;
        int have_id = 0;
        uint32_t id = 0;
        long long uid = -1;
        const unsigned char *payload = NULL;
        size_t plen = 0;
        while (a + sizeof(struct nlattr) <= end) {
            const struct nlattr *at = (const struct nlattr *)a;
            if (at->nla_len < sizeof *at || a + at->nla_len > end)
                break;
            const unsigned char *v = (const unsigned char *)a + NLA_HDRLEN;
            size_t vlen = at->nla_len - NLA_HDRLEN;
            int type = at->nla_type & NLA_TYPE_MASK;
            if (type == NFQA_PACKET_HDR && vlen >= 4) {
                memcpy(&id, v, 4);
                id = ntohl(id);
                have_id = 1;
            } else if (type == NFQA_PAYLOAD) {
                payload = v;
                plen = vlen;
            } else if (type == NFQA_UID && vlen >= 4) {
                uint32_t u;
                memcpy(&u, v, 4);
                uid = ntohl(u);
            }
            a += NLA_ALIGN(at->nla_len);
        }
        if (!have_id)
            continue;
        Result *r = &out[count++];
        memset(r, 0, sizeof *r);
        r->packet_id = id;
        r->uid = -1;
        if (name && payload) {
            pthread_mutex_lock(&hints_lock);
            name_packet(payload, plen, uid, r);
            pthread_mutex_unlock(&hints_lock);
        }
        if (fd >= 0 && (r->kind != KIND_SCAN || !keep_scan))
            send_verdict(fd, queue, id);
    }
    return count;
}

static PyObject *results(const Result *rs, int n)
{
    PyObject *list = PyList_New(n);
    if (!list)
        return NULL;
    for (int i = 0; i < n; i++) {
        const Result *r = &rs[i];
        PyObject *key, *uid, *comm, *pid, *inode;
        if (r->have_key)
            key = Py_BuildValue("(ssIsI)", r->tcp ? "tcp" : "udp", r->src, r->sport, r->dst,
                                r->dport);
        else
            key = Py_NewRef(Py_None);
        uid = r->uid >= 0 ? PyLong_FromLongLong(r->uid) : Py_NewRef(Py_None);
        inode = r->inode ? PyLong_FromUnsignedLongLong(r->inode) : Py_NewRef(Py_None);
        pid = r->pid ? PyLong_FromLong(r->pid) : Py_NewRef(Py_None);
        comm = r->have_comm ? PyUnicode_DecodeUTF8(r->comm, strlen(r->comm), "backslashreplace")
                            : Py_NewRef(Py_None);
        PyObject *t = (key && uid && inode && pid && comm)
                          ? Py_BuildValue("(iIOOOOO)", r->kind, r->packet_id, key, inode, uid,
                                          pid, comm)
                          : NULL;
        Py_XDECREF(key);
        Py_XDECREF(uid);
        Py_XDECREF(inode);
        Py_XDECREF(pid);
        Py_XDECREF(comm);
        if (!t) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, t);
    }
    return list;
}

static long long now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000LL + t.tv_nsec / 1000;
}

/* Wait (up to wait_us; < 0: for ever) for stopfd or packets; handle every packet
 * waiting, into out[*count...] (up to MAX_BATCH). Returns 0, or -1 stopfd readable,
 * -2 interrupted (EINTR). */
static int wait_and_handle(int nlfd, unsigned queue, int stopfd, long long wait_us, int name,
                           int keep_scan, char *buf, size_t size, Result *out, int *count)
{
    struct pollfd p[2] = {{nlfd, POLLIN, 0}, {stopfd, POLLIN, 0}};
    struct timespec t = {wait_us / 1000000, (wait_us % 1000000) * 1000};
    int got = ppoll(p, 2, wait_us < 0 ? NULL : &t, NULL);
    if (got < 0)
        return errno == EINTR ? -2 : 0;
    if (p[1].revents)
        return -1;
    if (!(p[0].revents & POLLIN))
        return 0;
    while (*count < MAX_BATCH) {
        ssize_t n = recv(nlfd, buf, size, MSG_DONTWAIT);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            break; /* EAGAIN; ENOBUFS after a burst: the queue fails open meanwhile */
        }
        *count += handle(buf, n, name, keep_scan, nlfd, queue, out + *count,
                         MAX_BATCH - *count);
    }
    return 0;
}

/* -- the serving thread ---------------------------------------------------------------- */
static struct {
    pthread_t thread;
    int running, nlfd, out_fd, report_fd, stop[2], linger_us, age_us, rt_limit;
    unsigned queue;
    int naming;                        /* atomic: 0 during a flood pause */
    long long held, passed, dropped;   /* atomic */
} srv;

/* A named sender's report, as holder.py's Holder.report writes it (a JSON line; the
 * same object json.loads reads), or 0 when its name needs more than printable ASCII
 * escaped (left to Python, which decodes it as it always has). */
static int report_line(const Result *r, char *out, size_t size)
{
    char comm[2 * sizeof r->comm + 3];
    if (r->have_comm) {
        size_t k = 0;
        comm[k++] = '"';
        for (const char *c = r->comm; *c; c++) {
            if (*c < 0x20 || *c > 0x7e)
                return 0;
            if (*c == '"' || *c == '\\')
                comm[k++] = '\\';
            comm[k++] = *c;
        }
        comm[k++] = '"';
        comm[k] = 0;
    } else
        strcpy(comm, "null");
    int n = snprintf(out, size,
                     "{\"key\": [\"%s\", \"%s\", %u, \"%s\", %u], \"inode\": %llu, "
                     "\"pid\": %d, \"comm\": %s}\n",
                     r->tcp ? "tcp" : "udp", r->src, r->sport, r->dst, r->dport, r->inode,
                     r->pid, comm);
    return n > 0 && (size_t)n < size ? n : 0;
}

/* Write whole pieces of at most PIPE_BUF bytes (each write all or nothing) to a
 * non-blocking fd; returns how many bytes went. */
static size_t write_pieces(int fd, const char *buf, const size_t *ends, int n)
{
    size_t start = 0;
    int i = 0;
    while (i < n) {
        int j = i;
        while (j + 1 < n && ends[j + 1] - start <= PIPE_BUF)
            j++;
        if (write(fd, buf + start, ends[j] - start) != (ssize_t)(ends[j] - start))
            return start;
        start = ends[j];
        i = j + 1;
    }
    return start;
}

/* Hand results over: a named sender's report straight to report_fd (the helper's
 * stdout), a packet left for a scan (or a name Python must decode) to out_fd for the
 * caller (decode()). Both non-blocking: what does not fit (netsql or the caller is not
 * reading) is dropped and counted, and a packet left for a scan is then let go here,
 * unnamed. */
static void flush(Result *rs, int n)
{
    static char lines[MAX_BATCH * 160];
    static size_t line_ends[MAX_BATCH], rec_ends[MAX_BATCH];
    static Result recs[MAX_BATCH];
    size_t used = 0;
    int nlines = 0, nrecs = 0;
    for (int i = 0; i < n; i++) {
        const Result *r = &rs[i];
        if (r->kind == KIND_PASSED)
            continue;
        int len = r->kind == KIND_NAMED
                      ? report_line(r, lines + used, sizeof lines - used) : 0;
        if (len > 0) {
            used += len;
            line_ends[nlines++] = used;
        } else {
            recs[nrecs] = *r;
            nrecs++;
            rec_ends[nrecs - 1] = nrecs * sizeof(Result);
        }
    }
    size_t sent = write_pieces(srv.report_fd, lines, line_ends, nlines);
    for (int i = 0; i < nlines; i++)
        if (line_ends[i] > sent)
            __atomic_add_fetch(&srv.dropped, 1, __ATOMIC_RELAXED);
    sent = write_pieces(srv.out_fd, (const char *)recs, rec_ends, nrecs);
    for (int i = (int)(sent / sizeof(Result)); i < nrecs; i++) {
        if (recs[i].kind == KIND_SCAN)
            send_verdict(srv.nlfd, srv.queue, recs[i].packet_id);
        __atomic_add_fetch(&srv.dropped, 1, __ATOMIC_RELAXED);
    }
}

/* The serving thread's scheduling: SCHED_FIFO (priority 1) while it names fewer than
 * rt_limit packets a second, else the ordinary policy; returns whether it is real-time.
 * Measured (bench_hold.py's lookups 0.25 ms apart, a client holding 13,400 sockets,
 * netsql --hold, load 2-4 on this 2-core VM, four runs each way): held minus unheld
 * at p99 +0.08 to +1.2 ms real-time, +1.4 to +4.5 ms ordinary (the helper waiting for
 * a CPU behind netsql's own work and other processes). Bounded: a packet costs it
 * 10-20 us, so rt_limit of them a second take about 6% of one CPU; past that (a
 * flood, or a flood pause: naming off) it competes like any process. Without the
 * privilege (a container) it stays ordinary. */
static int realtime(int on)
{
    struct sched_param sp = {0};
    sp.sched_priority = on ? 1 : 0;
    return pthread_setschedparam(pthread_self(), on ? SCHED_FIFO : SCHED_OTHER, &sp) == 0
               ? on : !on;
}

static void *serve_thread(void *unused)
{
    static char buf[65536];
    static Result out[MAX_BATCH];
    int count = 0, rt = 0, named = 0;
    long long first = 0, window = 0;
    (void)unused;
    for (;;) {
        long long wait_us = -1;
        if (count) {
            long long left = first + srv.age_us - now_us();
            wait_us = left < srv.linger_us ? left : srv.linger_us;
            if (wait_us <= 0) {
                flush(out, count);
                count = 0;
                continue;
            }
        }
        int before = count, scan = 0;
        int name = __atomic_load_n(&srv.naming, __ATOMIC_RELAXED);
        int status = wait_and_handle(srv.nlfd, srv.queue, srv.stop[0], wait_us, name, 1, buf,
                                     sizeof buf, out, &count);
        __atomic_add_fetch(name ? &srv.held : &srv.passed, count - before, __ATOMIC_RELAXED);
        long long now = now_us();
        if (now - window >= 1000000)
            window = now, named = 0;
        named += count - before;
        int want = name && named <= srv.rt_limit;
        if (want != rt)
            rt = realtime(want);
        if (status == -1) { /* stopping: nobody will scan for the packets still held */
            for (int i = 0; i < count; i++)
                if (out[i].kind == KIND_SCAN) {
                    send_verdict(srv.nlfd, srv.queue, out[i].packet_id);
                    out[i].kind = KIND_PASSED;
                }
            flush(out, count);
            return NULL;
        }
        if (count == before) { /* quiet for wait_us (or a signal): hand over */
            if (count && status == 0)
                flush(out, count), count = 0;
            continue;
        }
        if (!before)
            first = now_us();
        for (int i = before; i < count; i++)
            scan |= out[i].kind == KIND_SCAN;
        if (scan || count >= MAX_BATCH || srv.linger_us <= 0) {
            flush(out, count); /* a packet waits for the caller's scan; no room */
            count = 0;
        }
    }
}

static PyObject *py_start(PyObject *self, PyObject *args)
{
    if (srv.running) {
        PyErr_SetString(PyExc_RuntimeError, "already serving");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "iIiiiii", &srv.nlfd, &srv.queue, &srv.out_fd, &srv.report_fd,
                          &srv.linger_us, &srv.age_us, &srv.rt_limit))
        return NULL;
    if (pipe2(srv.stop, O_CLOEXEC) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    srv.naming = 1;
    srv.held = srv.passed = srv.dropped = 0;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* signals stay the main thread's */
    int err = pthread_create(&srv.thread, NULL, serve_thread, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        close(srv.stop[0]);
        close(srv.stop[1]);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    srv.running = 1;
    Py_RETURN_NONE;
}

static PyObject *py_stop(PyObject *self, PyObject *unused)
{
    if (srv.running) {
        Py_BEGIN_ALLOW_THREADS
        (void)!write(srv.stop[1], "", 1);
        pthread_join(srv.thread, NULL);
        Py_END_ALLOW_THREADS
        close(srv.stop[0]);
        close(srv.stop[1]);
        srv.running = 0;
    }
    Py_RETURN_NONE;
}

static PyObject *py_set_naming(PyObject *self, PyObject *args)
{
    int on;
    if (!PyArg_ParseTuple(args, "p", &on))
        return NULL;
    __atomic_store_n(&srv.naming, on, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

static PyObject *py_counts(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("(LLL)", __atomic_load_n(&srv.held, __ATOMIC_RELAXED),
                         __atomic_load_n(&srv.passed, __ATOMIC_RELAXED),
                         __atomic_load_n(&srv.dropped, __ATOMIC_RELAXED));
}

static PyObject *py_decode(PyObject *self, PyObject *args)
{
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b))
        return NULL;
    Py_ssize_t n = b.len / (Py_ssize_t)sizeof(Result);
    Result *rs = PyMem_Malloc(n ? n * sizeof(Result) : 1);
    if (!rs) {
        PyBuffer_Release(&b);
        return PyErr_NoMemory();
    }
    memcpy(rs, b.buf, n * sizeof(Result));
    PyBuffer_Release(&b);
    PyObject *out = results(rs, (int)n);
    PyMem_Free(rs);
    return out;
}

static PyObject *py_passthrough(PyObject *self, PyObject *args)
{
    static char buf[65536];
    static Result out[MAX_BATCH];
    int nlfd, stopfd;
    unsigned queue;
    if (!PyArg_ParseTuple(args, "iIi", &nlfd, &queue, &stopfd))
        return NULL;
    long long total = 0;
    for (;;) {
        int n = 0, status;
        Py_BEGIN_ALLOW_THREADS
        status = wait_and_handle(nlfd, queue, stopfd, -1, 0, 0, buf, sizeof buf, out, &n);
        Py_END_ALLOW_THREADS
        total += n;
        if (status == -1)
            break;
        if (status == -2 && PyErr_CheckSignals() < 0)
            return NULL;
    }
    return PyLong_FromLongLong(total);
}

static PyObject *py_lookup(PyObject *self, PyObject *args)
{
    static Result out[MAX_BATCH];
    Py_buffer msg;
    if (!PyArg_ParseTuple(args, "y*", &msg))
        return NULL;
    int n = handle(msg.buf, msg.len, 1, 1, -1, 0, out, MAX_BATCH); /* GIL held: out */
    PyBuffer_Release(&msg);
    return results(out, n);
}

static PyObject *py_report(PyObject *self, PyObject *args)
{
    static Result out[MAX_BATCH];
    static char line[512];
    Py_buffer msg;
    if (!PyArg_ParseTuple(args, "y*", &msg))
        return NULL;
    int n = handle(msg.buf, msg.len, 1, 1, -1, 0, out, MAX_BATCH);
    PyBuffer_Release(&msg);
    PyObject *list = PyList_New(0);
    for (int i = 0; list && i < n; i++) {
        int len = out[i].kind == KIND_NAMED ? report_line(&out[i], line, sizeof line) : 0;
        PyObject *item = len ? PyBytes_FromStringAndSize(line, len) : Py_NewRef(Py_None);
        if (!item || PyList_Append(list, item) < 0)
            Py_CLEAR(list);
        Py_XDECREF(item);
    }
    return list;
}

static PyObject *py_verdict(PyObject *self, PyObject *args)
{
    int nlfd;
    unsigned queue, id;
    if (!PyArg_ParseTuple(args, "iII", &nlfd, &queue, &id))
        return NULL;
    send_verdict(nlfd, queue, id);
    Py_RETURN_NONE;
}

static PyObject *py_hit(PyObject *self, PyObject *args)
{
    int pid, fd;
    unsigned long long inode;
    if (!PyArg_ParseTuple(args, "iiK", &pid, &fd, &inode))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&hints_lock);
    remember(pid, fd, inode, 1);
    pthread_mutex_unlock(&hints_lock);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_recent(PyObject *self, PyObject *unused)
{
    int pids[RECENT], n;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&hints_lock);
    n = nrecent;
    for (int i = 0; i < n; i++)
        pids[i] = recent[i].pid;
    pthread_mutex_unlock(&hints_lock);
    Py_END_ALLOW_THREADS
    PyObject *list = PyList_New(n);
    for (int i = 0; list && i < n; i++) {
        PyObject *pid = PyLong_FromLong(pids[i]);
        if (!pid) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, pid);
    }
    return list;
}

static PyObject *py_reset(PyObject *self, PyObject *unused)
{
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&hints_lock);
    memset(inode_slots, 0, sizeof inode_slots);
    for (int i = 0; i < nrecent; i++)
        detach(&recent[i]);
    nrecent = 0;
    pthread_mutex_unlock(&hints_lock);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"start", py_start, METH_VARARGS, "Serve the queue from a thread of this module's."},
    {"stop", py_stop, METH_NOARGS, "Stop serving (the thread hands its last results over)."},
    {"set_naming", py_set_naming, METH_VARARGS, "Name held packets (or only let them go)."},
    {"counts", py_counts, METH_NOARGS, "(held, passed, dropped) since start."},
    {"decode", py_decode, METH_VARARGS, "The tuples of records read from out_fd."},
    {"passthrough", py_passthrough, METH_VARARGS, "Let every held packet go at once."},
    {"lookup", py_lookup, METH_VARARGS, "The tuples for one datagram, no verdict."},
    {"report", py_report, METH_VARARGS, "lookup's reports as the serving thread writes them."},
    {"verdict", py_verdict, METH_VARARGS, "Let one held packet go."},
    {"hit", py_hit, METH_VARARGS, "Where an inode was found (pid, fd, inode)."},
    {"recent", py_recent, METH_NOARGS, "The latest senders' pids, latest first."},
    {"reset", py_reset, METH_NOARGS, "Forget every hint."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_chold", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__chold(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "RECORD_SIZE", sizeof(Result)) < 0)
        Py_CLEAR(m);
    return m;
}
