/* _cscan_ring.c: live_ring, the TPACKET_V3 ring reader, and live_packet (one packet);
 * their arguments: the live capture section of _cscan.h.
 * Part of netsql.capture._cscan (_cscan.c says what it does; _cscan.h lists its files). */
#include "_cscan.h"

/* The interface name of `index` (borrowed from ifnames), NULL on error. */
static PyObject *ring_ifname(PyObject *ifname, PyObject *ifnames, int index)
{
    PyObject *key = PyLong_FromLong(index);
    if (key == NULL)
        return NULL;
    PyObject *name = PyDict_GetItemWithError(ifnames, key);
    if (name == NULL && !PyErr_Occurred()) {
        PyObject *made = PyObject_CallOneArg(ifname, key);
        if (made != NULL && PyDict_SetItem(ifnames, key, made) == 0)
            name = made;
        Py_XDECREF(made); /* ifnames holds it */
    }
    Py_DECREF(key);
    return name;
}

PyObject *live_ring(PyObject *self, PyObject *args)
{
    (void)self;
    LiveWalk w;
    Py_buffer ring, ports;
    Py_ssize_t block, nblocks, bsize, blocks = 0, full = 0, limit = -1;
    long packets = 0, errors = 0;
    double last = 0.0;
    PyObject *capsule, *ns, *scan, *ifname, *ifnames, *marks, *result = NULL;
    if (!PyArg_ParseTuple(args, "OOOw*nnny*OO!O!|n", &capsule, &ns, &scan, &ring, &block,
                          &nblocks, &bsize, &ports, &ifname, &PyDict_Type, &ifnames,
                          &PyList_Type, &marks, &limit))
        return NULL;
    if (limit < 0 || limit > nblocks)
        limit = nblocks;
    if (ports.len != 8192 || nblocks <= 0 || bsize < 64 || block < 0 || block >= nblocks
            || nblocks > ring.len / bsize) {
        PyErr_SetString(PyExc_ValueError, "live_ring: bad arguments");
        goto out;
    }
    Live *lv = live_walk(capsule, ns, scan, marks, ports.buf, &w);
    if (lv == NULL)
        goto out;
    int last_index = -1;
    PyObject *name = NULL; /* borrowed from ifnames: the name of last_index */
    while (blocks < limit) {
        unsigned char *b = (unsigned char *)ring.buf + block * bsize;
        struct tpacket_block_desc *bd = (void *)b;
        uint32_t status = __atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE);
        if (!(status & TP_STATUS_USER))
            break;
        full += !(status & TP_STATUS_BLK_TMO); /* handed over full, not by its timeout */
        /* a block's packets parsed first, then paired (their table slots fetched ahead) */
        Py_ssize_t off = bd->hdr.bh1.offset_to_first_pkt;
        size_t n = 0, most = (size_t)bsize / TPACKET3_HDRLEN + 1;
        if (lv->msgcap < most) {
            LMsg *more = realloc(lv->msgs, most * sizeof(LMsg));
            if (more == NULL) {
                PyErr_NoMemory();
                goto out;
            }
            lv->msgs = more;
            lv->msgcap = most;
        }
        for (uint32_t i = 0; i < bd->hdr.bh1.num_pkts && n < most; i++) {
            if (off < (Py_ssize_t)sizeof *bd || off + (Py_ssize_t)TPACKET3_HDRLEN > bsize)
                break; /* never past the block, whatever it says */
            const struct tpacket3_hdr *h = (const void *)(b + off);
            Py_ssize_t len = h->tp_snaplen;
            if (h->tp_net < TPACKET3_HDRLEN || off + h->tp_net + len > bsize)
                break;
            const struct sockaddr_ll *ll = (const void *)((const unsigned char *)h
                                                          + TPACKET_ALIGN(sizeof *h));
            if (!(ll->sll_pkttype == PACKET_OUTGOING
                  && ll->sll_hatype == LIVE_ARPHRD_LOOPBACK)) {
                LMsg *lm = &lv->msgs[n];
                Found fd;
                const unsigned char *f = b + off + h->tp_net;
                double ts = (double)h->tp_sec + (double)h->tp_nsec / 1e9;
                packets++;
                if (ts > last)
                    last = ts;
                if (ll->sll_ifindex != last_index) {
                    name = ring_ifname(ifname, ifnames, ll->sll_ifindex);
                    last_index = name == NULL ? -1 : ll->sll_ifindex;
                }
                int kind = name == NULL ? -1 : parse_frame(101, f, len, w.ports, &fd);
                if (kind < 0) {
                    errors++;
                    PyErr_Clear();
                } else if (kind == P_MALFORMED) {
                    w.counts.malformed++;
                } else if (kind != P_SKIP) {
                    memset(&lm->m, 0, sizeof lm->m);
                    lm->m.ts = ts;
                    lm->m.kind = (uint8_t)kind;
                    lm->iface = name;
                    lm->local = ll->sll_pkttype == PACKET_OUTGOING
                        || ll->sll_hatype == LIVE_ARPHRD_LOOPBACK;
                    if (kind == P_GENERAL) {
                        lm->m.dns = f;
                        lm->m.dlen = (uint32_t)len;
                    } else {
                        lm->m.src = fd.src;
                        lm->m.dst = fd.dst;
                        lm->m.alen = (uint8_t)fd.alen;
                        lm->m.sport = (uint16_t)fd.sport;
                        lm->m.dport = (uint16_t)fd.dport;
                        lm->m.dns = fd.dns;
                        lm->m.dlen = (uint32_t)fd.dlen;
                        classify(&lm->m, lv->mode);
                    }
                    n++;
                }
            }
            if (h->tp_next_offset == 0)
                break;
            off += h->tp_next_offset;
        }
        for (size_t j = 0; j < n; j++) {
            LMsg *lm = &lv->msgs[j];
            if (j + 8 < n && lv->msgs[j + 8].m.kind == P_MESSAGE)
                __builtin_prefetch(ltab_bucket(w.tab, lv->msgs[j + 8].m.hash));
            int rc = lm->m.kind == P_GENERAL
                ? live_general(&w, lm->m.ts, lm->m.dns, lm->m.dlen, lm->local, lm->iface)
                : live_msg(&w, &lm->m, lm->local, lm->iface);
            if (rc < 0) {
                errors++;
                PyErr_Clear();
            }
        }
        __atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
        block = (block + 1) % nblocks;
        blocks++;
    }
    if (live_flush(&w) < 0)
        goto out;
    result = Py_BuildValue("nlldnn", block, packets, errors, last, blocks, full);
out:
    PyBuffer_Release(&ring);
    PyBuffer_Release(&ports);
    return result;
}

/* live_packet(store, ns, scan, ts, packet, interface, local, portmap, marks): one IP
 * packet (as a cooked socket reads it) into the store; a failed callback raises. */
PyObject *live_packet(PyObject *self, PyObject *args)
{
    (void)self;
    LiveWalk w;
    Py_buffer pkt, ports;
    double ts;
    int local;
    PyObject *capsule, *ns, *scan, *iface, *marks, *result = NULL;
    if (!PyArg_ParseTuple(args, "OOOdy*Opy*O!", &capsule, &ns, &scan, &ts, &pkt, &iface,
                          &local, &ports, &PyList_Type, &marks))
        return NULL;
    if (ports.len != 8192) {
        PyErr_SetString(PyExc_ValueError, "live_packet: bad arguments");
        goto out;
    }
    if (live_walk(capsule, ns, scan, marks, ports.buf, &w) == NULL)
        goto out;
    int rc = live_frame(&w, ts, pkt.buf, pkt.len, local, iface == Py_None ? NULL : iface);
    if (live_flush(&w) < 0 || rc < 0)
        goto out;
    result = Py_NewRef(Py_None);
out:
    PyBuffer_Release(&pkt);
    PyBuffer_Release(&ports);
    return result;
}
