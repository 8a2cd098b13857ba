"""What `pip install .` really installs: a wheel built from a copy of the source tree.

The wheel must hold every module and data file under netsql/ (a hand-kept package list
once shipped a wheel without netsql.watch), and a wheel built where no C compiler
works must install and give the same answers through the pure-Python paths. .ci/run
goes further: it installs a wheel with its dependencies in a fresh venv and runs
.ci/smoke.py against that install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns("build", "dist", "*.so", ".venv", "__pycache__", "*.egg-info",
                              ".git", ".hypothesis", ".mypy_cache", ".ruff_cache", "*.pcap*")


def source_files() -> set[str]:
    """Every file a user's install needs: netsql/ (less build output) and queries/*.sql
    (installed as netsql/_queries)."""
    found = set()
    for path in (ROOT / "netsql").rglob("*"):
        rel = path.relative_to(ROOT)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".so":
            found.add(rel.as_posix())
    for path in (ROOT / "queries").glob("*.sql"):
        found.add(f"netsql/_queries/{path.name}")
    return found


@pytest.fixture(scope="module")
def plain_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A wheel built from a clean copy of the tree with the C compiler failing."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    env = dict(os.environ, CC="false", LDSHARED="false")
    out = tmp / "dist"
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                        str(out), str(src)], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    (wheel,) = out.glob("netsql-*.whl")
    yield wheel


def test_wheel_holds_every_module_and_data_file(plain_wheel: Path) -> None:
    names = set(zipfile.ZipFile(plain_wheel).namelist())
    missing = sorted(source_files() - names)
    assert not missing, f"the wheel lacks {missing}"
    assert "netsql/_queries/trace-domain.sql" in names
    assert not [n for n in names if n.endswith(".so")], "the compiler was meant to fail"


@pytest.fixture(scope="module")
def plain_python(plain_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the compiler-less wheel. Its dependencies come from this
    environment's site-packages, added by a path line in a .pth file: that puts the
    directory on sys.path without running the .pth files inside it, so the development
    tree's editable install (an import hook) stays out."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig;"
                           "print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "netsql-test-deps.pth").write_text("\n".join(deps) + "\n")
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-index", "--target", site, str(plain_wheel)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return python


def run_installed(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NETSQL_SOCKET="")
    return subprocess.run([str(python), "-m", "netsql", "--local", *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def run_here(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NETSQL_SOCKET="")
    return subprocess.run([sys.executable, "-m", "netsql", "--local", *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def test_wheel_without_compiler_runs_pure_python(plain_python: Path, tmp_path: Path) -> None:
    probe = subprocess.run(
        [str(plain_python), "-c",
         "import netsql, importlib.util as u; print(netsql.__file__);"
         "print(*(u.find_spec(m) is not None for m in"
         " ('netsql.capture._cscan', 'netsql._cdiag')))"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert probe.returncode == 0, probe.stderr
    where, compiled = probe.stdout.splitlines()
    assert where.startswith(str(plain_python.parent.parent)), where
    assert compiled == "False False"

    # A capture file this test writes, read by the installed pure-Python scanner and
    # by the development tree (compiled where it was built): the same rows.
    from tests.dnsutil import udp_ip
    from tests.test_fastscan import BASE_TS, answer, eth, pcap, query

    frames = []
    for i, name in enumerate(["a.example.test", "b.example.test", "c.example.test"]):
        frames.append((BASE_TS + i, 1, eth(udp_ip("10.0.0.2", "10.0.0.1", 40000 + i, 53,
                                                   query(i + 1, name)))))
        frames.append((BASE_TS + i + 0.001, 1, eth(udp_ip("10.0.0.1", "10.0.0.2", 53,
                                                           40000 + i, answer(i + 1, name)))))
    capture = tmp_path / "sample.pcap"
    capture.write_bytes(pcap(frames))
    sql = ("SELECT query, qtype, rcode, answers FROM dns_queries "
           "ORDER BY ts, query, qtype")
    installed = run_installed(plain_python, "--csv", "--pcap", str(capture), "-e", sql,
                              cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.count("\n") > 3
    assert installed.stdout == run_here("--csv", "--pcap", str(capture), "-e", sql).stdout

    # Sockets through the pure-Python sock_diag parser: this test's own listener.
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        got = run_installed(plain_python, "--csv", "--no-header", "-e",
                            f"SELECT pid, state FROM sockets WHERE local_port = {port} "
                            "AND protocol = 'tcp' AND local_address = '127.0.0.1'",
                            cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == f"{os.getpid()},LISTEN"
