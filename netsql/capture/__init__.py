"""Packet sources and pure decoders: capture files (pcap/pcapng), link/IP/transport
frames, and DNS wire format. Decoders are plain functions from bytes to values; they
never raise on malformed input (they return None instead)."""
