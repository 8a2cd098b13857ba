from typing import Any

def scan_pcap(scan: Any, buf: bytes, pos: int, big_endian: bool, divisor: int, extra: int,
              linktype: int, portmap: bytes, mode: int) -> tuple[int, int, int]: ...
