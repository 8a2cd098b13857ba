"""NFQUEUE's netlink messages (nfnetlink_queue: the kernel's queue of held packets), as
the hold's helper (holder.py) speaks them: the protocol's numbers, a held packet's
fields, the configuration and verdict messages a queue's listener sends, and how many
packets wait in a queue. netlink.py frames the messages.
"""

from __future__ import annotations

import os
import socket
import struct

from netsql import netlink
from netsql.netlink import NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD, NFQA_UID = 1, 2, 10, 16
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQA_CFG_MASK, NFQA_CFG_FLAGS = 4, 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_PACKET = 2
NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_UID_GID = 0x1, 0x8
NF_ACCEPT = 1

NFGEN = struct.Struct("=BBH")
PACKET_MSG = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET


def packet_fields(data: bytes, start: int, end: int) -> tuple[int | None, int | None, bytes]:
    """A held packet's id, uid (NFQA_UID) and payload, from its netlink message."""
    packet_id = uid = None
    payload = b""
    for atype, vstart, vend in netlink.attributes(data, start + 4, end):  # after nfgenmsg
        atype &= 0x7FFF
        if atype == NFQA_PACKET_HDR:
            packet_id = struct.unpack_from(">I", data, vstart)[0]
        elif atype == NFQA_PAYLOAD:
            payload = data[vstart:vend]
        elif atype == NFQA_UID:
            uid = struct.unpack_from(">I", data, vstart)[0]
    return packet_id, uid, payload


#: The configuration that binds a queue to its listener.
BIND = netlink.attr(NFQA_CFG_CMD, struct.pack("=BxH", NFQNL_CFG_CMD_BIND, 0))


def queue_params(copy_range: int, maxlen: int) -> bytes:
    """The configuration of a bound queue: ``copy_range`` bytes of each packet copied,
    at most ``maxlen`` packets waiting (past them the kernel lets packets pass: fail
    open), each packet with its socket's uid."""
    flags = struct.pack(">I", NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_UID_GID)
    return (netlink.attr(NFQA_CFG_PARAMS, struct.pack(">IB", copy_range, NFQNL_COPY_PACKET))
            + netlink.attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", maxlen))
            + netlink.attr(NFQA_CFG_FLAGS, flags) + netlink.attr(NFQA_CFG_MASK, flags))


def configure(sock: socket.socket, seq: int, num: int, attrs: bytes) -> None:
    """Send queue ``num``'s configuration ``attrs`` as message ``seq`` and wait for its
    acknowledgement (OSError: the kernel refused it)."""
    body = NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(num)) + attrs
    msg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
    sock.send(netlink.message(msg_type, NLM_F_REQUEST | NLM_F_ACK, seq, body))
    while True:
        data = sock.recv(65536)
        for kind, got, start, end in netlink.messages(data):
            if kind == NLMSG_ERROR and got == seq:
                err = netlink.error_code(data, start, end)
                if err:
                    raise OSError(err, os.strerror(err))
                return


def accept(sock: socket.socket, queue_num: int, packet_id: int) -> None:
    """Let held packet ``packet_id`` of queue ``queue_num`` go (NF_ACCEPT)."""
    body = (NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(queue_num))
            + netlink.attr(NFQA_VERDICT_HDR, struct.pack(">II", NF_ACCEPT, packet_id)))
    msg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
    try:
        sock.send(netlink.message(msg_type, NLM_F_REQUEST, 0, body))
    except OSError:
        pass


def queue_total(queue_num: int) -> int:
    """Packets waiting in queue ``queue_num`` now (the kernel's queue_total)."""
    try:
        with open("/proc/net/netfilter/nfnetlink_queue") as f:
            for line in f:
                words = line.split()
                if words and int(words[0]) == queue_num:
                    return int(words[2])
    except (OSError, ValueError, IndexError):
        pass
    return 0
