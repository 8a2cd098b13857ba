"""osquery's Linux columns, transcribed from its specs/*.table (osquery/osquery at
a5b14f63): (name, osquery type, hidden) per table, in declaration order. Columns of
other platforms' extended_schema are hidden on Linux, as osquery declares them."""

from __future__ import annotations

T, N, B = "TEXT", "INTEGER", "BIGINT"

SPECS: dict[str, list[tuple[str, str, bool]]] = {
    "processes": [
        ("pid", B, False), ("name", T, False), ("path", T, False), ("cmdline", T, False),
        ("state", T, False), ("cwd", T, False), ("root", T, False), ("uid", B, False),
        ("gid", B, False), ("euid", B, False), ("egid", B, False), ("suid", B, False),
        ("sgid", B, False), ("on_disk", N, False), ("wired_size", B, False),
        ("resident_size", B, False), ("total_size", B, False), ("user_time", B, False),
        ("system_time", B, False), ("disk_bytes_read", B, False),
        ("disk_bytes_written", B, False), ("start_time", B, False), ("parent", B, False),
        ("pgroup", B, False), ("threads", N, False), ("nice", N, False),
        # extended_schema(WINDOWS), (DARWIN): hidden on Linux
        ("elevated_token", N, True), ("secure_process", N, True),
        ("protection_type", T, True), ("virtual_process", N, True),
        ("elapsed_time", B, True), ("handle_count", B, True),
        ("percent_processor_time", B, True), ("upid", B, True), ("uppid", B, True),
        ("cpu_type", N, True), ("cpu_subtype", N, True), ("translated", N, True),
        # extended_schema(LINUX)
        ("cgroup_path", T, False),
    ],
    "process_open_sockets": [
        ("pid", N, False), ("fd", B, False), ("socket", B, False), ("family", N, False),
        ("protocol", N, False), ("local_address", T, False), ("remote_address", T, False),
        ("local_port", N, False), ("remote_port", N, False), ("path", T, False),
        ("state", T, False), ("net_namespace", T, False),
    ],
    "listening_ports": [
        ("pid", N, False), ("port", N, False), ("protocol", N, False), ("family", N, False),
        ("address", T, False), ("fd", B, False), ("socket", B, False), ("path", T, False),
        ("net_namespace", T, False),
    ],
    "process_open_files": [("pid", B, False), ("fd", B, False), ("path", T, False)],
    "routes": [
        ("destination", T, False), ("netmask", N, False), ("gateway", T, False),
        ("source", T, False), ("flags", N, False), ("interface", T, False),
        ("mtu", N, False), ("metric", N, False), ("type", T, False),
        ("hopcount", N, False),
    ],
    "interface_addresses": [
        ("interface", T, False), ("address", T, False), ("mask", T, False),
        ("broadcast", T, False), ("point_to_point", T, False), ("type", T, False),
    ],
    "interface_details": [
        ("interface", T, False), ("mac", T, False), ("type", N, False), ("mtu", N, False),
        ("metric", N, False), ("flags", N, False), ("ipackets", B, False),
        ("opackets", B, False), ("ibytes", B, False), ("obytes", B, False),
        ("ierrors", B, False), ("oerrors", B, False), ("idrops", B, False),
        ("odrops", B, False), ("collisions", B, False), ("last_change", B, False),
        ("link_speed", B, False), ("pci_slot", T, False),
    ],
    "arp_cache": [("address", T, False), ("mac", T, False), ("interface", T, False),
                  ("permanent", T, False)],
    "etc_hosts": [("address", T, False), ("hostnames", T, False),
                  ("pid_with_namespace", N, True)],
    "dns_resolvers": [("id", N, False), ("type", T, False), ("address", T, False),
                      ("netmask", T, False), ("options", B, False),
                      ("pid_with_namespace", N, True)],
    "iptables": [
        ("filter_name", T, False), ("chain", T, False), ("policy", T, False),
        ("target", T, False), ("protocol", N, False), ("src_port", T, False),
        ("dst_port", T, False), ("src_ip", T, False), ("src_mask", T, False),
        ("iniface", T, False), ("iniface_mask", T, False), ("dst_ip", T, False),
        ("dst_mask", T, False), ("outiface", T, False), ("outiface_mask", T, False),
        ("match", T, False), ("packets", N, False), ("bytes", N, False),
    ],
    "users": [
        ("uid", B, False), ("gid", B, False), ("uid_signed", B, False),
        ("gid_signed", B, False), ("username", T, False), ("description", T, False),
        ("directory", T, False), ("shell", T, False), ("uuid", T, False),
        ("pid_with_namespace", N, True), ("include_remote", N, True),
    ],
    "groups": [("gid", B, False), ("gid_signed", B, False), ("groupname", T, False),
               ("pid_with_namespace", N, True)],
    "time": [
        ("weekday", T, False), ("year", N, False), ("month", N, False), ("day", N, False),
        ("hour", N, False), ("minutes", N, False), ("seconds", N, False),
        ("timezone", T, False), ("local_timezone", T, False), ("unix_time", N, False),
        ("timestamp", T, False), ("datetime", T, False), ("iso_8601", T, False),
    ],
    "system_info": [
        ("hostname", T, False), ("uuid", T, False), ("cpu_type", T, False),
        ("cpu_subtype", T, False), ("cpu_brand", T, False),
        ("cpu_physical_cores", N, False), ("cpu_logical_cores", N, False),
        ("cpu_sockets", N, False), ("cpu_microcode", T, False),
        ("physical_memory", B, False), ("hardware_vendor", T, False),
        ("hardware_model", T, False), ("hardware_version", T, False),
        ("hardware_serial", T, False), ("board_vendor", T, False),
        ("board_model", T, False), ("board_version", T, False),
        ("board_serial", T, False), ("computer_name", T, False),
        ("local_hostname", T, False),
    ],
    "osquery_info": [
        ("pid", N, False), ("uuid", T, False), ("instance_id", T, False),
        ("version", T, False), ("config_hash", T, False), ("config_valid", N, False),
        ("extensions", T, False), ("build_platform", T, False),
        ("build_distro", T, False), ("start_time", N, False), ("watcher", N, False),
        ("platform_mask", N, False),
    ],
}

#: osquery's type -> the DuckDB type netsql declares.
DUCKDB = {T: "VARCHAR", N: "INTEGER", B: "BIGINT"}
#: Documented widenings: osquery's INTEGER counters that pass 2^31 (SQLite stores them
#: in 64 bits anyway).
WIDER = {("iptables", "packets"): "BIGINT", ("iptables", "bytes"): "BIGINT"}
