"""What pyproject.toml cannot say: the saved queries' mapped package and the optional C
parts.

The shipped saved queries live in queries/ at the top of the repository and install as
netsql/_queries/*.sql (netsql.queries finds either); every other package is found by
pyproject's [tool.setuptools.packages.find].

netsql/capture/_cscan.c reads classic pcap files and netsql/_cdiag.c parses the
kernel's socket dumps, each several times faster than its pure-Python twin;
netsql/capture/_chold.c is the query hold's per-packet path (holder.py's twin). They are
Linux-only. Without a C compiler and Python headers the build skips them
(``optional=True``) and netsql uses the Python code, which gives the same rows (tests
compare the two, and tests/test_packaging.py installs a wheel built without a compiler).
"""

import sys

from setuptools import Extension, find_packages, setup

EXTENSIONS = [
    Extension("netsql.capture._cscan",
              [f"netsql/capture/{name}.c" for name in (
                  "_cscan", "_cscan_dns", "_cscan_pcap", "_cscan_threads", "_cscan_pairs",
                  "_cscan_store", "_cscan_live", "_cscan_ring", "_cscan_rows")],
              depends=["netsql/capture/_cscan.h"], optional=True, extra_compile_args=["-O2"]),
    Extension("netsql._cdiag", ["netsql/_cdiag.c"], optional=True,
              extra_compile_args=["-O2"]),
    Extension("netsql.capture._chold", ["netsql/capture/_chold.c"], optional=True,
              extra_compile_args=["-O2"]),
]

setup(
    packages=[*find_packages(include=["netsql", "netsql.*"]), "netsql._queries"],
    package_dir={"netsql._queries": "queries"},
    ext_modules=EXTENSIONS if sys.platform.startswith("linux") else [],
)
