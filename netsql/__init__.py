"""netsql: an osquery-style SQL shell for tracing network traffic to processes."""

__version__ = "0.1.0"
