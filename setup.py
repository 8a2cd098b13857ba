"""The one thing pyproject.toml cannot say: the optional C parts.

netsql/capture/_cscan.c reads classic pcap files and netsql/_cdiag.c parses the
kernel's socket dumps, each several times faster than its pure-Python twin. Without a
C compiler and Python headers the build skips them (``optional=True``) and netsql
uses the Python code, which gives the same rows (tests compare the two).
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("netsql.capture._cscan", ["netsql/capture/_cscan.c"], optional=True,
              extra_compile_args=["-O2"]),
    Extension("netsql._cdiag", ["netsql/_cdiag.c"], optional=True,
              extra_compile_args=["-O2"]),
])
