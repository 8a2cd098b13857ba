/* _cscan: the classic-pcap walk of netsql.capture.fastscan.Scan, compiled.
 *
 * scan_pcap(scan, buf, pos, big_endian, divisor, extra, linktype, portmap, mode)
 *     -> (pos, records, bad_length)
 *
 * Walks the complete records of `buf` (a classic pcap file's bytes from `pos`), parses
 * link, IP and UDP headers exactly as Scan.feed does, and for each DNS message either
 * pairs it itself or calls scan._message(). mode bit 1: the question is wanted; bit 2:
 * the answers are. A plain question (no compression, no character that needs escaping)
 * is read here, and so are answers when every one is an A or AAAA record of class IN
 * owned by a pointer to that question (the usual response); any other message goes to
 * Python (dnswire.decode_dns), so both paths give the same rows. Frames Scan.feed hands
 * to the general decoder go to scan._general().
 * State lives in the Scan object (pairing.table, rows, counters), so the two paths
 * can be mixed and must agree row for row; tests/test_fastscan.py checks that they do.
 * Queries and responses are paired by the rule of netsql/capture/pairing.py, mirrored
 * in verdict_query/verdict_response (_cscan.h; tests/test_dns_policy.py holds all paths to
 * it). scan_pcap_threads and live capture (live_ring, live_packet: _cscan_ring.c and
 * _cscan_live.c) use the same parse_frame and verdicts on C tables.
 *
 * Stops before the first incomplete record (pos says where; the caller reads more) or
 * at a record claiming more than 16 MiB (bad_length is that length, pos its offset).
 */
#include "_cscan.h"

PyObject *s_udp, *s_tcp, *s_unanswered, *s_answered, *s_response_only, *s_type_a, *s_type_aaaa;
PyObject *s_names;
PyObject *s_pairing, *s_table, *s_rows, *s_general, *s_message;
PyObject *s_messages, *s_queries, *s_responses, *s_malformed, *s_first_ts;
PyObject *s_duplicates, *s_forgotten, *s_ranges;

static PyMethodDef methods[] = {
    {"scan_pcap", scan_pcap, METH_VARARGS,
     "scan_pcap(scan, buf, pos, big_endian, divisor, extra, linktype, portmap, mode)"
     " -> (pos, records, bad_length)"},
    {"scan_pcap_threads", scan_pcap_threads, METH_VARARGS,
     "scan_pcap_threads(scan, pairs, buf, pos, big_endian, divisor, extra, linktype, portmap,"
     " threads, min_range) -> (pos, records, bad_length)"},
    {"pairs_new", pairs_new, METH_VARARGS, "pairs_new(mode) -> the state of a threaded scan"},
    {"pairs_columns", pairs_columns, METH_VARARGS,
     "pairs_columns(pairs, column_indices) -> [list, ...]"},
    {"pairs_len", pairs_len, METH_O, "pairs_len(pairs) -> transactions"},
    {"live_new", live_new, METH_VARARGS, "live_new(capacity, mode, limit) -> a live capture's store"},
    {"live_ring", live_ring, METH_VARARGS,
     "live_ring(store, ns, scan, ring, block, nblocks, block_size, portmap, ifname, ifnames,"
     " marks, limit) -> (block, packets, errors, last_ts, blocks)"},
    {"live_packet", live_packet, METH_VARARGS,
     "live_packet(store, ns, scan, ts, packet, interface, local, portmap, marks)"},
    {"live_forget", live_forget, METH_VARARGS, "live_forget(store, ns)"},
    {"live_find", live_find, METH_VARARGS,
     "live_find(store, ns, tcp, client, cport, server, sport, id) -> seq or None"},
    {"live_row", live_row, METH_VARARGS, "live_row(store, seq) -> row or None"},
    {"live_answers", live_answers, METH_VARARGS,
     "live_answers(store, seq) -> (answered at, query, answers, types, ttls, ns) or None"},
    {"live_rows", live_rows, METH_VARARGS, "live_rows(store[, since]) -> (first seq, rows)"},
    {"live_columns", live_columns, METH_VARARGS, "live_columns(store, indices) -> [list, ...]"},
    {"live_stats", live_stats, METH_O,
     "live_stats(store) -> ([(ns, buffered, evicted, open), ...], first seq)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cscan", "Compiled classic-pcap scan for fastscan.Scan.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cscan(void)
{
    plain_init();
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_udp, "udp"}, {&s_tcp, "tcp"}, {&s_unanswered, "unanswered"}, {&s_answered, "answered"},
        {&s_response_only, "response_only"}, {&s_pairing, "pairing"},
        {&s_table, "table"}, {&s_rows, "rows"}, {&s_general, "_general"},
        {&s_message, "_message"}, {&s_messages, "messages"}, {&s_queries, "queries"},
        {&s_responses, "responses"}, {&s_malformed, "malformed"},
        {&s_first_ts, "first_ts"}, {&s_type_a, "A"}, {&s_type_aaaa, "AAAA"},
        {&s_names, "names"}, {&s_duplicates, "duplicates"}, {&s_forgotten, "forgotten"}, {&s_ranges, "ranges"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
