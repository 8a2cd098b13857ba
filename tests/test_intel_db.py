"""`netsql intel import|list|remove|path` and the database: atomic, idempotent imports,
exit statuses, one-line errors, schema versions and migrations."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from netsql.cli import main
from netsql.context import Env, ExitStatus
from netsql.intel import db
from netsql.intel.files import parse
from netsql.paths import intel_db
from tests.conftest import run_netsql

FIX = Path(__file__).parent / "fixtures" / "intel"


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


def intel(dbfile: Path, *args: str, stdin: str = "") -> Run:
    env = Env(stdin=io.StringIO(stdin), stdout=io.StringIO(), stderr=io.StringIO())
    code = main(["intel", *args, "--intel-db", str(dbfile)] if args and args[0] != "--help"
                else ["intel", *args], env)
    return Run(code, env.stdout.getvalue(), env.stderr.getvalue())  # type: ignore[attr-defined]


def listing(dbfile: Path) -> dict[str, dict[str, object]]:
    r = intel(dbfile, "list", "--json")
    assert r.code == 0, r.err
    return {row["source"]: row for row in json.loads(r.out)}


def indicators(dbfile: Path, source: str) -> list[tuple[str, str]]:
    con = duckdb.connect(str(dbfile), read_only=True)
    try:
        return con.execute("SELECT indicator, kind FROM indicators WHERE source = ? "
                           "ORDER BY line, indicator", [source]).fetchall()
    finally:
        con.close()


@pytest.fixture
def dbfile(tmp_path: Path) -> Path:
    return tmp_path / "data" / "intel.duckdb"


@pytest.mark.parametrize("fixture,fmt,count", [
    ("hosts", "hosts", 6), ("domains.txt", "domains", 7), ("ips.txt", "ips", 5),
    ("urlhaus.csv", "urlhaus-csv", 4), ("threatfox.csv", "threatfox-csv", 4),
    ("drop_v4.json", "spamhaus-drop", 2), ("drop_v6.json", "spamhaus-drop", 1),
])
def test_every_format_imports(dbfile: Path, fixture: str, fmt: str, count: int) -> None:
    r = intel(dbfile, "import", str(FIX / fixture), "--source", "feed")
    assert r.code == 0 and r.out == "", r.err
    assert r.err.startswith(f"netsql: imported {count} indicators (")
    row = listing(dbfile)["feed"]
    assert (row["format"], row["indicators"]) == (fmt, count)
    assert len(indicators(dbfile, "feed")) == count


def test_reimport_replaces_never_duplicates(dbfile: Path, tmp_path: Path) -> None:
    f = tmp_path / "mylist.txt"
    f.write_text("one.example\ntwo.example\n")
    assert intel(dbfile, "import", str(f)).code == 0  # source: the file's name
    r = intel(dbfile, "import", str(f))
    assert r.code == 0 and "replaced the 2 indicators it held" in r.err
    assert indicators(dbfile, "mylist") == [("one.example", "domain"), ("two.example", "domain")]
    f.write_text("three.example\n")
    assert intel(dbfile, "import", str(f), "--format", "domains").code == 0
    assert indicators(dbfile, "mylist") == [("three.example", "domain")]
    assert list(listing(dbfile)) == ["mylist"]


def test_a_broken_file_imports_nothing_and_names_the_line(dbfile: Path,
                                                          tmp_path: Path) -> None:
    assert intel(dbfile, "import", str(FIX / "hosts"), "--source", "sb").code == 0
    before = indicators(dbfile, "sb")
    broken = tmp_path / "hosts"
    lines = (FIX / "hosts").read_text().split("\n")
    lines.insert(40, "0.0.0.0 fine.example")
    lines.insert(41, "0.0.0.0 <script>.example")
    broken.write_text("\n".join(lines))
    r = intel(dbfile, "import", str(broken), "--source", "sb")
    assert r.code == ExitStatus.ERROR and r.out == ""
    assert r.err == f"netsql: error: {broken}:42: not a domain name: '<script>.example'\n"
    assert indicators(dbfile, "sb") == before  # the old list stands, whole
    r = intel(dbfile, "import", str(broken), "--source", "new")
    assert r.code == ExitStatus.ERROR and "new" not in listing(dbfile)


def test_a_failed_write_rolls_back(dbfile: Path) -> None:
    con = db.open_db(str(dbfile))
    good = parse(str(FIX / "ips.txt"))
    db.import_batch(con, good, "ips", "ips.txt", "x")
    bad = parse(str(FIX / "ips.txt"))
    bad.lo[-1] = "not a number"  # the INSERT fails after the DELETE ran
    with pytest.raises(duckdb.Error):
        db.import_batch(con, bad, "ips", "ips.txt", "y")
    assert con.execute("SELECT count(*), any_value(sha256) FROM indicators JOIN sources "
                       "USING (source)").fetchone() == (5, "x")
    con.close()


@pytest.mark.parametrize("per_pass", [db.ROWS_PER_PASS, 7, 1])
def test_duplicates_found_in_several_passes_as_in_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_pass: int) -> None:
    """The duplicate search split by hash into passes (bounded memory for any list)
    keeps the first line of each indicator, as one pass does."""
    from netsql.intel.parsers import Batch

    monkeypatch.setattr(db, "ROWS_PER_PASS", per_pass)
    batch = Batch("domains", spill=lambda b: None)  # keeps repeats, as a streamed import
    names = [f"d{i % 23}.example" for i in range(100)] + ["once.example"]
    for line, name in enumerate(names, 1):
        batch.add(line, name, "domain", name)
    batch.add(102, "d1.example", "url", "d1.example")  # another kind: not a duplicate
    con = db.open_db(str(tmp_path / "intel.duckdb"))
    try:
        done = db.import_batch(con, batch, "s", "f", "")
        assert (done.indicators, done.duplicates) == (25, 77)
        assert con.execute("SELECT list(line ORDER BY line) FROM indicators").fetchone() == (
            [*range(1, 24), 101, 102],)
    finally:
        con.close()


def test_list_and_remove(dbfile: Path) -> None:
    r = intel(dbfile, "list")
    assert r.code == 0 and "no lists imported yet" in r.err
    assert intel(dbfile, "import", "--sample").code == 0
    rows = listing(dbfile)
    assert list(rows) == ["sample-domains", "sample-ips"]
    assert rows["sample-ips"]["kinds"] == "cidr 2, ip 1"
    assert str(rows["sample-domains"]["path"]).endswith("sample-domains.txt")
    assert rows["sample-domains"]["imported_at"]
    table = intel(dbfile, "list").out
    assert "sample-domains" in table and "domain 5" in table
    r = intel(dbfile, "remove", "sample-ip")
    assert (r.code, r.err) == (ExitStatus.ERROR, "netsql: error: no such source: sample-ip "
                               "(did you mean sample-ips, sample-domains?)\n")
    r = intel(dbfile, "remove", "sample-ips")
    assert r.code == 0 and r.err == "netsql: removed source 'sample-ips' (3 indicators)\n"
    assert list(listing(dbfile)) == ["sample-domains"]
    assert indicators(dbfile, "sample-ips") == []


def test_usage_errors(dbfile: Path, tmp_path: Path) -> None:
    assert intel(dbfile, "import").code == ExitStatus.USAGE
    assert intel(dbfile, "import", "-").code == ExitStatus.USAGE  # needs --source
    assert intel(dbfile, "import", "x", "--format", "csv").code == ExitStatus.USAGE
    r = intel(dbfile, "import", str(tmp_path / "missing.txt"))
    assert (r.code, r.err) == (ExitStatus.USAGE, f"netsql: error: cannot read "
                               f"{tmp_path / 'missing.txt'}: No such file or directory\n")
    assert intel(dbfile, "frobnicate").code == ExitStatus.USAGE
    r = intel(dbfile, "remove", "x")
    assert r.code == ExitStatus.ERROR and "no intel database at" in r.err
    assert not dbfile.exists()  # nothing was created by failures
    help_ = intel(dbfile, "--help")
    assert help_.code == 0 and "import" in help_.out and "remove" in help_.out


def test_stdin_and_path(dbfile: Path) -> None:
    r = intel(dbfile, "import", "-", "--source", "pasted", stdin="# notes\nbad.example\n")
    assert r.code == 0, r.err
    assert indicators(dbfile, "pasted") == [("bad.example", "domain")]
    assert listing(dbfile)["pasted"]["path"] == "<stdin>"
    assert intel(dbfile, "path").out == f"{dbfile}\n"


def test_default_path_is_xdg() -> None:
    assert intel_db(None, {"XDG_DATA_HOME": "/d"}) == "/d/netsql/intel.duckdb"
    assert intel_db(None, {"NETSQL_INTEL_DB": "/x.db", "XDG_DATA_HOME": "/d"}) == "/x.db"
    assert intel_db("/flag.db", {"NETSQL_INTEL_DB": "/x.db"}) == "/flag.db"
    assert intel_db(None, {}).endswith("/.local/share/netsql/intel.duckdb")


def test_under_sudo_e_no_root_owned_file_in_the_users_home(tmp_path: Path) -> None:
    """sudo -E keeps HOME and XDG_DATA_HOME: the database is root's own, and netsql
    refuses to create one under a directory of another user even when named."""
    if os.geteuid() != 0:
        pytest.skip("needs root to chown a directory to another user")
    import pwd

    home = tmp_path / "alice"
    home.mkdir()
    os.chown(home, 4321, 4321)
    environ = {"HOME": str(home), "XDG_DATA_HOME": str(home / ".local" / "share"),
               "SUDO_USER": "alice", "SUDO_UID": "4321", "SUDO_GID": "4321"}
    root_home = Path(pwd.getpwuid(0).pw_dir)
    assert intel_db(None, environ, euid=0) == str(
        root_home / ".local" / "share" / "netsql" / "intel.duckdb")
    target = home / ".local" / "share" / "netsql" / "intel.duckdb"
    out = run_netsql("intel", "import", str(FIX / "domains.txt"),
                     env={"NETSQL_INTEL_DB": str(target)})
    assert out.returncode == 1 and f"{home} belongs to another user" in out.stderr
    assert list(home.iterdir()) == []


def test_as_a_command_with_env_var(tmp_path: Path) -> None:
    env = {"NETSQL_INTEL_DB": str(tmp_path / "i.duckdb")}
    out = run_netsql("intel", "import", str(FIX / "domains.txt"), env=env)
    assert out.returncode == 0 and out.stdout == "", out.stderr
    out = run_netsql("--json", "-e", "SELECT count(*) AS n FROM intel", env=env)
    assert out.returncode == 0 and json.loads(out.stdout) == [{"n": 7}], out.stderr
    out = run_netsql("intel", "import", str(FIX / "domains.txt"), "--format", "ips", env=env)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr and ":6: not an IP address" in out.stderr


# -- schema versions -------------------------------------------------------------------
V2 = (2, "ALTER TABLE sources ADD COLUMN note VARCHAR; UPDATE sources SET note = 'v2';")


def test_older_database_is_upgraded_in_place(dbfile: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A file made by this netsql (v1), opened by a later one that knows v2."""
    assert intel(dbfile, "import", str(FIX / "ips.txt")).code == 0
    monkeypatch.setattr(db, "MIGRATIONS", [*db.MIGRATIONS, V2])
    monkeypatch.setattr(db, "SCHEMA_VERSION", 2)
    rows = listing(dbfile)  # read-only use upgrades first
    assert rows["ips"]["indicators"] == 5
    con = duckdb.connect(str(dbfile), read_only=True)
    assert con.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [
        (1,), (2,)]
    assert con.execute("SELECT note FROM sources").fetchall() == [("v2",)]
    con.close()


def test_engine_attach_upgrades_too(dbfile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netsql.collect import State
    from netsql.engine import Engine

    assert intel(dbfile, "import", str(FIX / "ips.txt")).code == 0
    monkeypatch.setattr(db, "MIGRATIONS", [*db.MIGRATIONS, V2])
    monkeypatch.setattr(db, "SCHEMA_VERSION", 2)
    engine = Engine(state=State(intel_db=str(dbfile)))
    (res,) = engine.run("SELECT count(*) FROM intel")
    assert res.data is not None and res.data.rows == [(5,)]
    assert engine.con.execute("SELECT note FROM intel_db.sources").fetchall() == [("v2",)]


def test_newer_database_is_refused(dbfile: Path) -> None:
    assert intel(dbfile, "import", str(FIX / "ips.txt")).code == 0
    con = duckdb.connect(str(dbfile))
    con.execute("INSERT INTO schema_version VALUES (99, now()::TIMESTAMP)")
    con.close()
    for args in (("list",), ("import", str(FIX / "ips.txt"))):
        r = intel(dbfile, *args)
        assert r.code == ExitStatus.ERROR
        assert r.err == (f"netsql: error: {dbfile} was made by a newer netsql (intel schema "
                         f"version 99; this netsql knows up to {db.SCHEMA_VERSION}): "
                         "upgrade netsql\n")
    out = run_netsql("-e", "SELECT * FROM intel", "--intel-db", str(dbfile))
    assert out.returncode == 1 and "made by a newer netsql" in out.stderr
    assert "Traceback" not in out.stderr


def test_failed_migration_changes_nothing(dbfile: Path) -> None:
    db.open_db(str(dbfile)).close()
    broken = [*db.MIGRATIONS, (2, "ALTER TABLE sources ADD COLUMN x INT; SELECT nonsense()")]
    with pytest.raises(db.IntelDbError, match="cannot upgrade .* to intel schema version 2"):
        db.open_db(str(dbfile), migrations=broken)
    con = db.open_db(str(dbfile))
    assert db.version(con, "intel", str(dbfile)) == 1
    assert "x" not in [r[0] for r in con.execute("DESCRIBE sources").fetchall()]
    con.close()


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE t (i INT)")
    con.close()
    r = intel(other, "list")
    assert r.code == 1 and "is a DuckDB database but not a netsql intel database" in r.err
    junk = tmp_path / "junk.duckdb"
    junk.write_text("hello\n" * 1000)
    r = intel(junk, "import", str(FIX / "ips.txt"))
    assert r.code == 1 and r.err.startswith(f"netsql: error: cannot open the intel database "
                                            f"{junk}: ") and r.err.count("\n") == 1


def test_database_in_use_says_so(dbfile: Path) -> None:
    assert intel(dbfile, "import", str(FIX / "ips.txt")).code == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], "
         "read_only=True); print('ready', flush=True); time.sleep(60)", str(dbfile)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        r = intel(dbfile, "import", str(FIX / "ips.txt"))
        assert r.code == ExitStatus.ERROR
        assert r.err.startswith(f"netsql: error: the intel database {dbfile} is in use by "
                                f"another process (pid {holder.pid})")
        assert listing(dbfile)["ips"]["indicators"] == 5  # readers share it
    finally:
        holder.kill()
        holder.wait()
    assert os.path.exists(dbfile)
