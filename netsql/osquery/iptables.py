"""osquery.iptables: IPv4 firewall rules, from `iptables-save -c` (read-only)."""

from __future__ import annotations

from typing import Any

from netsql.collect import Collection, Need
from netsql.osquery.spec import col, table
from netsql.schema import Columns

NAMES = ("filter_name", "chain", "policy", "target", "protocol", "src_port", "dst_port",
         "src_ip", "src_mask", "iniface", "iniface_mask", "dst_ip", "dst_mask", "outiface",
         "outiface_mask", "match", "packets", "bytes")
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "sctp": 132, "udplite": 136, "esp": 50,
             "ah": 51, "gre": 47, "all": 0}
TIMEOUT = 10.0


def _net(text: str) -> tuple[str, str]:
    import ipaddress

    net = ipaddress.IPv4Network(text, strict=False)
    return str(net.network_address), str(net.netmask)


def _iface(name: str) -> tuple[str, str]:
    """iptables' interface and its mask: 'eth+' matches a prefix."""
    if name.endswith("+"):
        return name[:-1], "F" * (len(name) - 1)
    return name, "F" * (len(name) + 1)


def parse(text: str) -> list[dict[str, Any]]:
    """The rules of iptables-save -c output, one dict per rule."""
    rows: list[dict[str, Any]] = []
    filter_name = ""
    policies: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            filter_name, policies = line[1:].strip(), {}
        elif line.startswith(":"):
            words = line[1:].split()
            if len(words) >= 2:
                policies[words[0]] = "" if words[1] == "-" else words[1]
        elif line.startswith("[") or line.startswith("-A"):
            rows.append(_rule(line, filter_name, policies))
    return rows


def _rule(line: str, filter_name: str, policies: dict[str, str]) -> dict[str, Any]:
    import shlex

    packets = nbytes = 0
    if line.startswith("["):
        counters, _, line = line.partition("] ")
        p, _, b = counters[1:].partition(":")
        packets, nbytes = int(p), int(b)
    words = shlex.split(line)
    r: dict[str, Any] = {"filter_name": filter_name, "packets": packets, "bytes": nbytes,
                         "protocol": 0, "src_ip": "0.0.0.0", "src_mask": "0.0.0.0",
                         "dst_ip": "0.0.0.0", "dst_mask": "0.0.0.0", "iniface": "all",
                         "outiface": "all", "target": "", "match": ""}
    matches: list[str] = []
    i = 0
    while i < len(words):
        w, arg = words[i], words[i + 1] if i + 1 < len(words) else ""
        if w == "-A":
            r["chain"] = arg
            r["policy"] = policies.get(arg, "")
        elif w == "-p":
            r["protocol"] = PROTOCOLS.get(arg, int(arg) if arg.isdigit() else 0)
        elif w == "-s":
            r["src_ip"], r["src_mask"] = _net(arg)
        elif w == "-d":
            r["dst_ip"], r["dst_mask"] = _net(arg)
        elif w == "-i":
            r["iniface"], r["iniface_mask"] = _iface(arg)
        elif w == "-o":
            r["outiface"], r["outiface_mask"] = _iface(arg)
        elif w in ("-j", "-g"):
            r["target"] = arg
        elif w == "-m":
            matches.append(arg)
        elif w in ("--sport", "--source-port"):
            r["src_port"] = arg
        elif w in ("--dport", "--destination-port"):
            r["dst_port"] = arg
        else:
            i += 1
            continue
        i += 2
    r["match"] = ",".join(matches)
    return r


def collect(coll: Collection, need: Need) -> Columns:
    import shutil
    import subprocess

    program = shutil.which("iptables-save")
    rows: list[dict[str, Any]] = []
    if program is None:
        coll.warn("iptables: iptables-save is not installed")
    else:
        try:
            done = subprocess.run([program, "-c"], capture_output=True, text=True,
                                  timeout=TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            coll.warn(f"iptables: {program}: {exc}")
        else:
            if done.returncode != 0:
                coll.warn(f"iptables: {program} -c failed: "
                          f"{done.stderr.strip().splitlines()[-1:] or done.returncode}")
            rows = parse(done.stdout)
    return {k: [r.get(k) for r in rows] for k in NAMES}


TABLE = table(
    "iptables",
    "Linux IP packet filtering and NAT tool (osquery's iptables): one row per IPv4 rule.",
    [
        col("filter_name", "TEXT", "Packet matching filter table name (filter, nat, "
            "mangle, raw, security)"),
        col("chain", "TEXT", "Chain the rule belongs to (INPUT, FORWARD, ...)"),
        col("policy", "TEXT", "Policy of the rule's chain (ACCEPT, DROP; '' for a user "
            "chain)"),
        col("target", "TEXT", "Target that applies for this rule (ACCEPT, DROP, a "
            "chain, ...)"),
        col("protocol", "INTEGER", "Protocol number identification (0: all)"),
        col("src_port", "TEXT", "Protocol source port(s) ('22' or '1000:2000')"),
        col("dst_port", "TEXT", "Protocol destination port(s)"),
        col("src_ip", "TEXT", "Source IP address"),
        col("src_mask", "TEXT", "Source IP address mask"),
        col("iniface", "TEXT", "Input interface for the rule ('all' when any)"),
        col("iniface_mask", "TEXT", "Input interface mask for the rule"),
        col("dst_ip", "TEXT", "Destination IP address"),
        col("dst_mask", "TEXT", "Destination IP address mask"),
        col("outiface", "TEXT", "Output interface for the rule ('all' when any)"),
        col("outiface_mask", "TEXT", "Output interface mask for the rule"),
        col("match", "TEXT", "Matching modules of the rule (-m), comma separated"),
        col("packets", "INTEGER", "Number of matching packets for this rule (BIGINT: "
            "counters pass 2^31)", duck="BIGINT"),
        col("bytes", "INTEGER", "Number of matching bytes for this rule (BIGINT)",
            duck="BIGINT"),
    ],
    collect,
    examples=("SELECT chain, policy, target, protocol, dst_port FROM iptables WHERE "
              "filter_name = 'filter'",),
    notes="Runs `iptables-save -c` (reads, changes nothing; root needed), so it sees "
    "the rules of the iptables flavour installed (nf_tables or legacy). Chains without "
    "rules give no row.",
)
