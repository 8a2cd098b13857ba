"""osquery.system_info: this host's identity, CPU and memory, one row."""

from __future__ import annotations

import os
import socket
from typing import Any

from netsql import procfs
from netsql.collect import Collection, Need
from netsql.osquery.spec import col, table
from netsql.schema import Columns

DMI = "/sys/class/dmi/id"


def _dmi(name: str) -> str | None:
    text = procfs.read_text(f"{DMI}/{name}")
    return text.strip() if text and text.strip() else None


def machine_uuid() -> str | None:
    """The SMBIOS product UUID (root), else /etc/machine-id as a UUID."""
    found = _dmi("product_uuid")
    if found:
        return found.upper()
    mid = (procfs.read_text("/etc/machine-id") or "").strip()
    if len(mid) == 32:
        return "-".join((mid[:8], mid[8:12], mid[12:16], mid[16:20], mid[20:])).upper()
    return None


def _cpu() -> dict[str, Any]:
    brand = microcode = None
    physical: set[tuple[str, str]] = set()
    sockets: set[str] = set()
    logical = 0
    phys_id = "0"
    for line in (procfs.read_text("/proc/cpuinfo") or "").splitlines():
        key, _, value = (p.strip() for p in line.partition(":"))
        if key == "processor":
            logical += 1
        elif key == "model name" and brand is None:
            brand = value
        elif key == "microcode" and microcode is None:
            microcode = value
        elif key == "physical id":
            phys_id = value
            sockets.add(value)
        elif key == "core id":
            physical.add((phys_id, value))
    return {"cpu_brand": brand, "cpu_microcode": microcode,
            "cpu_logical_cores": logical or os.cpu_count(),
            "cpu_physical_cores": len(physical) or logical or os.cpu_count(),
            "cpu_sockets": len(sockets) or 1}


def _memory() -> int | None:
    for line in (procfs.read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def collect(coll: Collection, need: Need) -> Columns:
    host = socket.gethostname()
    row: dict[str, Any] = {
        "hostname": host,
        "uuid": machine_uuid(), "cpu_type": os.uname().machine, "cpu_subtype": None,
        **_cpu(), "physical_memory": _memory(),
        "hardware_vendor": _dmi("sys_vendor"), "hardware_model": _dmi("product_name"),
        "hardware_version": _dmi("product_version"),
        "hardware_serial": _dmi("product_serial"), "board_vendor": _dmi("board_vendor"),
        "board_model": _dmi("board_name"), "board_version": _dmi("board_version"),
        "board_serial": _dmi("board_serial"), "computer_name": host,
        "local_hostname": host,
    }
    return {k: [v] for k, v in row.items()}


TABLE = table(
    "system_info",
    "System information for identification (osquery's system_info): one row.",
    [
        col("hostname", "TEXT", "Network hostname including domain"),
        col("uuid", "TEXT", "Unique ID provided by the system (SMBIOS product UUID with "
            "root, else /etc/machine-id)"),
        col("cpu_type", "TEXT", "CPU type (the machine: x86_64, aarch64)"),
        col("cpu_subtype", "TEXT", "CPU subtype (NULL on Linux)"),
        col("cpu_brand", "TEXT", "CPU brand string, contains vendor and model"),
        col("cpu_physical_cores", "INTEGER", "Number of physical CPU cores in to the system"),
        col("cpu_logical_cores", "INTEGER", "Number of logical CPU cores available to the "
            "system"),
        col("cpu_sockets", "INTEGER", "Number of processor sockets in the system"),
        col("cpu_microcode", "TEXT", "Microcode version"),
        col("physical_memory", "BIGINT", "Total physical memory in bytes"),
        col("hardware_vendor", "TEXT", "Hardware vendor (SMBIOS)"),
        col("hardware_model", "TEXT", "Hardware model"),
        col("hardware_version", "TEXT", "Hardware version"),
        col("hardware_serial", "TEXT", "Device serial number (root only)"),
        col("board_vendor", "TEXT", "Board vendor"),
        col("board_model", "TEXT", "Board model"),
        col("board_version", "TEXT", "Board version"),
        col("board_serial", "TEXT", "Board serial number (root only)"),
        col("computer_name", "TEXT", "Friendly computer name (optional)"),
        col("local_hostname", "TEXT", "Local hostname (optional)"),
    ],
    collect,
    examples=("SELECT hostname, cpu_brand, physical_memory FROM system_info",),
    notes="Hardware columns come from /sys/class/dmi/id; NULL where the machine has no "
    "SMBIOS (containers, many ARM boards).",
)
