"""The one thing pyproject.toml cannot say: the optional C scanner.

netsql/capture/_cscan.c speeds up reading classic pcap files. Without a C compiler
and Python headers the build skips it (``optional=True``) and netsql uses the
pure-Python scan, which gives the same rows.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("netsql.capture._cscan", ["netsql/capture/_cscan.c"],
                             optional=True, extra_compile_args=["-O2"])])
