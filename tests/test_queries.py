"""Saved queries: header parsing, typed binding, the search path, and the CLI around
them (-q, -p, --list-queries, --queries, -q NAME --help). The shipped queries against
real data in a namespace lab are in test_queries_live.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pytest

from netsql.context import ExitStatus
from netsql.docgen import generated
from netsql.engine import Engine
from netsql.queries import (
    SHIPPED,
    USER,
    QueryFileError,
    QueryUsageError,
    find_query,
    load_queries,
    parse_query,
    prepare_runs,
    read_query,
    shipped_dir,
    user_dir,
)
from tests.conftest import run_netsql

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_NAMES = {"trace-domain", "connections", "listening", "dns-top", "dns-failures",
                 "unusual-processes", "routes-and-gateways", "process-network",
                 "direct-ip-connections", "dns-tunneling", "suspicious-ports",
                 "who-asked", "new-destinations", "short-lived-talkers"}

SAMPLE = """\
-- name: sample
-- description: A query for the tests,
--   on two lines.
-- param: who text (required) Whose name: any text.
-- param: n int = 3 How many.
-- param: ratio float = 0.5 A share.
-- param: on bool = false A switch.
-- param: window interval = '1 hour' How far back.
-- param: at timestamp = null A moment.
-- param: tags text[] = 'a,b' Some tags.
-- param: ports int[] = '53' Some ports.
-- example: netsql -q sample -p who=me
--
-- Notes, first paragraph,
-- still the first.
--
-- Second paragraph.
SELECT $who AS who, $n AS n, $ratio AS ratio, $on AS "on", $window AS "window",
       $at AS at, $tags AS tags, $ports AS ports;
"""


def arrays(text: str) -> list[list[dict[str, object]]]:
    """The rows of each statement: --json output is one array of rows for one statement
    that returns rows, one array of such arrays for several."""
    doc = json.loads(text)
    assert isinstance(doc, list)
    if doc and all(isinstance(x, list) for x in doc):
        return doc
    return [doc]


def one_line_usage_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == ExitStatus.USAGE, (out.stdout, out.stderr)
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("netsql: error: "), lines
    return lines[0]


def write(d: Path, name: str, text: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{name}.sql"
    p.write_text(text)
    return p


# -- the header ------------------------------------------------------------------


def test_header_fields_params_and_notes() -> None:
    q = parse_query(SAMPLE, "/x/sample.sql", "user")
    assert (q.name, q.origin, q.path) == ("sample", "user", "/x/sample.sql")
    assert q.description == "A query for the tests, on two lines."
    assert [(p.name, p.type, p.required, p.default) for p in q.params] == [
        ("who", "text", True, None), ("n", "int", False, "3"),
        ("ratio", "float", False, "0.5"), ("on", "bool", False, "false"),
        ("window", "interval", False, "1 hour"), ("at", "timestamp", False, None),
        ("tags", "text[]", False, "a,b"), ("ports", "int[]", False, "53")]
    assert q.params[0].description == "Whose name: any text."
    assert q.examples == ("netsql -q sample -p who=me",)
    assert q.notes == "Notes, first paragraph, still the first.\n\nSecond paragraph."
    assert q.usage() == ("netsql -q sample -p who=TEXT [-p n=INT] [-p ratio=NUMBER] "
                         "[-p on=true|false] [-p window=INTERVAL] [-p at=TIMESTAMP] "
                         "[-p tags=TEXT,...] [-p ports=INT,...]")
    q.check()  # every $name is declared
    # What runs: the header blanked (its prose is not SQL), line numbers kept.
    assert q.header_lines == 17
    assert q.body.split("\n")[:18] == [""] * 17 + ["SELECT $who AS who, $n AS n, $ratio "
                                                     "AS ratio, $on AS \"on\", $window "
                                                     "AS \"window\","]
    assert q.body.count("\n") == q.sql.count("\n")


@pytest.mark.parametrize("header, message", [
    ("-- param: x txt = 'a' X.", "line 2: parameter x: unknown type 'txt'"),
    ("-- param: x text X.", "line 2: parameter x: say '(required)' or '= DEFAULT'"),
    ("-- param: x int = ten X.", "line 2: default of parameter x: not a whole number"),
    ("-- param: x int = 1", "line 2: parameter x: needs a description"),
    ("-- param: x text = 'open X.", "line 2: unterminated quoted default"),
    ("-- param: x int = 1 X.\n-- param: x int = 2 Y.", "line 3: parameter x declared twice"),
    ("-- parm: x int = 1 X.", "line 2: unknown header field 'parm' (did you mean param?)"),
    ("-- name: other", "the header names it 'other', the file 'q'"),
])
def test_header_errors_name_the_line(header: str, message: str) -> None:
    with pytest.raises(QueryFileError) as err:
        parse_query(f"-- description: D.\n{header}\nSELECT 1", "/d/q.sql")
    assert message in str(err.value)
    assert "\n" not in str(err.value) and str(err.value).startswith("/d/q.sql: ")


def test_header_needs_a_description_and_a_good_name() -> None:
    with pytest.raises(QueryFileError, match="needs a '-- description:' line"):
        parse_query("-- name: q\nSELECT 1", "/d/q.sql")
    with pytest.raises(QueryFileError, match="bad query name 'Bad_Name'"):
        parse_query("-- description: D.\nSELECT 1", "/d/Bad_Name.sql")
    # A -f file needs neither.
    assert parse_query("-- param: a int = 1 A.\nSELECT $a", "/d/My File.sql",
                       strict=False).params[0].name == "a"


def test_sql_using_an_undeclared_parameter_is_reported(tmp_path: Path) -> None:
    q = parse_query("-- description: D.\n-- param: a int = 1 A.\nSELECT $a, $b", "/d/q.sql")
    with pytest.raises(QueryFileError, match=r"uses \$b but the header declares"):
        q.check()
    # Broken SQL in a query file is an SQL error (exit 1, with its position), not usage.
    write(tmp_path, "bad", "-- description: Bad.\n-- param: a int = 1 A.\nSELEC $a")
    out = run_netsql("--queries", str(tmp_path), "-q", "bad")
    assert out.returncode == ExitStatus.ERROR
    assert out.stderr.startswith("netsql: error: bad: Parser Error: syntax error at or near "
                                 "\"SELEC\"") and len(out.stderr.splitlines()) == 1


# -- binding -------------------------------------------------------------------------


def test_bind_converts_to_the_declared_types_and_fills_defaults() -> None:
    q = parse_query(SAMPLE, "/x/sample.sql")
    assert q.bind({"who": "me"}) == {
        "who": "me", "n": 3, "ratio": 0.5, "on": False, "window": dt.timedelta(hours=1),
        "at": None, "tags": ["a", "b"], "ports": [53]}
    got = q.bind({"who": "", "N": "-7", "ratio": "1e3", "on": "YES", "window": "1d 2h 30s",
                  "at": "2026-01-02T05:04:05+02:00", "tags": "x, y ,", "ports": "22,443"})
    assert got == {"who": "", "n": -7, "ratio": 1000.0, "on": True,
                   "window": dt.timedelta(days=1, hours=2, seconds=30),
                   "at": dt.datetime(2026, 1, 2, 3, 4, 5), "tags": ["x", "y"],
                   "ports": [22, 443]}
    assert q.bind({"who": "a", "window": "01:30:00"})["window"] == dt.timedelta(minutes=90)
    assert q.bind({"who": "a", "window": "15 minutes"})["window"] == dt.timedelta(minutes=15)


@pytest.mark.parametrize("args, message", [
    ({}, "sample: missing parameter who (usage: netsql -q sample -p who=TEXT"),
    ({"who": "a", "nn": "1"}, "sample: unknown parameter 'nn' (did you mean n? parameters: "
                              "who, n, ratio, on, window, at, tags, ports)"),
    ({"who": "a", "n": "1.5"}, "sample: parameter n: not a whole number: '1.5'"),
    ({"who": "a", "n": "1_000"}, "sample: parameter n: not a whole number"),
    ({"who": "a", "ratio": "nan"}, "sample: parameter ratio: not a number"),
    ({"who": "a", "on": "maybe"}, "sample: parameter on: not true or false"),
    ({"who": "a", "window": "soon"}, "sample: parameter window: not an interval"),
    ({"who": "a", "window": "5 parsecs"}, "sample: parameter window: not an interval"),
    ({"who": "a", "at": "yesterday"}, "sample: parameter at: not a timestamp"),
    ({"who": "a", "ports": "22,ssh"}, "sample: parameter ports: not a whole number"),
])
def test_bind_errors_are_one_line(args: dict[str, str], message: str) -> None:
    q = parse_query(SAMPLE, "/x/sample.sql")
    with pytest.raises(QueryUsageError) as err:
        q.bind(args)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_bound_values_reach_duckdb_typed() -> None:
    q = parse_query(SAMPLE, "/x/sample.sql")
    [res] = Engine().run(q.sql, q.bind({"who": "x'; DROP TABLE t; --", "at": "2026-01-02"}))
    assert res.data is not None
    assert dict(zip(res.data.columns, res.data.types, strict=True)) == {
        "who": "VARCHAR", "n": "INTEGER", "ratio": "DOUBLE", "on": "BOOLEAN",
        "window": "INTERVAL", "at": "TIMESTAMP", "tags": "VARCHAR[]", "ports": "INTEGER[]"}
    assert res.data.rows[0][0] == "x'; DROP TABLE t; --"


def test_each_statement_gets_only_the_parameters_it_uses() -> None:
    engine = Engine()
    results = list(engine.run("CREATE TABLE t AS SELECT $a AS a; SELECT 1 AS one; "
                              "SELECT a, $b AS b FROM t", {"a": 5, "b": "x", "unused": 1}))
    assert [r.data.rows if r.data else None for r in results] == [None, [(1,)], [(5, "x")]]


# -- the library -----------------------------------------------------------------------


def test_shipped_queries_parse_and_declare_what_they_use() -> None:
    assert shipped_dir() == ROOT / "queries"
    queries = load_queries(environ={"HOME": "/nonexistent"})
    assert {q.name for q in queries} == SHIPPED_NAMES
    for q in queries:
        assert q.origin == SHIPPED and q.description and q.examples, q.name
        assert q.used_params() == {p.name for p in q.params}, q.name  # none unused
        for p in q.params:
            assert p.description.endswith("."), (q.name, p.name)


def test_shipped_queries_run_with_their_defaults() -> None:
    """On this host, without capture: every statement binds and runs, and each result
    set has named, typed columns a reader can tell apart (no duplicate names, no column
    typed NULL: a NULL no table fills)."""
    engine = Engine()
    shipped = load_queries(environ={"HOME": "/nonexistent"})
    assert len(shipped) >= 10
    for q in shipped:
        args = {p.name: "1" for p in q.params if p.required}
        results = [res for res in engine.run(q.sql, q.bind(args)) if res.data is not None]
        assert results, f"{q.name}: no statement returns rows"
        for res in results:
            assert res.data is not None
            cols = list(res.data.columns)
            assert cols and len(set(cols)) == len(cols), (q.name, cols)
            assert "NULL" not in res.data.types, (q.name, cols, res.data.types)
            assert all(len(row) == len(cols) for row in res.data.rows), q.name


def test_search_order_user_dir_then_queries_dirs(tmp_path: Path) -> None:
    environ = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    udir = user_dir(environ)
    assert udir == tmp_path / "cfg" / "netsql" / "queries"
    write(udir, "listening", "-- description: Mine.\nSELECT 'user' AS origin")
    write(udir, "extra", "-- description: Extra.\nSELECT 1")
    write(udir, "broken", "-- description: B.\n-- param: x nope = 1 X.\nSELECT 1")
    more = tmp_path / "more"
    write(more, "listening", "-- description: Theirs.\nSELECT 'more' AS origin")
    warnings: list[str] = []
    queries = load_queries([str(more)], warn=warnings.append, environ=environ)
    by_name = {q.name: q for q in queries}
    assert by_name["extra"].origin == USER
    assert (by_name["listening"].origin, by_name["listening"].description) == (
        str(more), "Theirs.")
    assert by_name["listening"].overrides == str(udir / "listening.sql")
    assert by_name["connections"].origin == SHIPPED
    assert len(warnings) == 1 and "broken.sql: line 2" in warnings[0]
    with pytest.raises(QueryUsageError, match="--queries: not a directory"):
        load_queries([str(tmp_path / "nope")], environ=environ)


@pytest.mark.skipif(os.geteuid() != 0, reason="the sudo rule applies to root")
def test_under_sudo_the_user_dir_is_roots_own() -> None:
    import pwd

    environ = {"SUDO_USER": "nobody", "SUDO_UID": "65534", "HOME": "/home/nobody",
               "XDG_CONFIG_HOME": "/home/nobody/.config"}
    assert user_dir(environ) == Path(pwd.getpwuid(0).pw_dir) / ".config/netsql/queries"


def test_unknown_name_suggests_the_closest() -> None:
    queries = load_queries(environ={"HOME": "/nonexistent"})
    with pytest.raises(QueryUsageError) as err:
        find_query("trace-domian", queries)
    assert str(err.value) == ("no saved query named 'trace-domian' (did you mean "
                              "trace-domain?); netsql --list-queries lists them")
    near = r"did you mean dns-failures, dns-top, dns-tunneling\?"
    with pytest.raises(QueryUsageError, match=near):
        find_query("dns", queries)


def test_prepare_runs_binds_q_and_f_in_order(tmp_path: Path) -> None:
    f = write(tmp_path, "f", "-- param: k int = 1 K.\nSELECT $k AS k")
    runs = prepare_runs([("sql", "sql", "SELECT 1"), ("file", str(f), f.read_text()),
                         ("query", "q", "listening")], ["k=2", "protocol=tcp"],
                        [], warn=None)
    assert [(o, p) for o, _, p in runs] == [
        ("sql", None), (str(f), {"k": 2}),
        ("listening", {"wildcard_only": False, "protocol": "tcp"})]
    with pytest.raises(QueryUsageError, match="no query or file given declares it"):
        prepare_runs([("file", str(f), f.read_text()), ("query", "q", "listening")],
                     ["nope=1"])
    with pytest.raises(QueryUsageError, match="one saved query per run"):
        prepare_runs([("query", "q", "listening"), ("query", "q", "connections")], [])


# -- the command line ----------------------------------------------------------------


def test_list_queries_table_and_json() -> None:
    out = run_netsql("--list-queries", env={"HOME": "/nonexistent"})
    assert out.returncode == 0 and out.stderr == ""
    header = [c.strip() for c in out.stdout.splitlines()[1].split("│")[1:-1]]
    assert header == ["name", "parameters", "description", "origin"]
    assert "│ trace-domain          │ domain, [subdomains] " in out.stdout
    for name in SHIPPED_NAMES:
        assert f"│ {name} " in out.stdout
    data = json.loads(run_netsql("--list-queries", "--format", "json",
                                 env={"HOME": "/nonexistent"}).stdout)
    assert {q["name"] for q in data} == SHIPPED_NAMES
    trace = next(q for q in data if q["name"] == "trace-domain")
    assert trace["parameters"][0] == {
        "name": "domain", "type": "text", "required": True, "default": None,
        "description": trace["parameters"][0]["description"]}
    assert trace["origin"] == "shipped" and trace["path"].endswith("trace-domain.sql")
    csv_out = run_netsql("--list-queries", "--csv", "--no-header",
                         env={"HOME": "/nonexistent"}).stdout
    assert csv_out.splitlines()[0].startswith("connections,")


def test_query_help_shows_its_parameters() -> None:
    out = run_netsql("-q", "dns-failures", "--help")
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith("usage: netsql -q dns-failures [-p rcodes=TEXT,...] "
                                 "[-p min_failures=INT]")
    assert "  min_failures=INT\n      int, default 1: Only processes" in out.stdout
    assert "file: " in out.stdout and "dns-failures.sql (shipped)" in out.stdout
    plain = run_netsql("--help")
    assert plain.returncode == 0 and "-q NAME, --query NAME" in plain.stdout
    assert "--list-queries" in plain.stdout
    bad = run_netsql("-q", "nosuch", "--help")
    assert "no saved query named 'nosuch'" in one_line_usage_error(bad)


@pytest.mark.parametrize("args, message", [
    (["-q", "trace-domain"], "trace-domain: missing parameter domain (usage: netsql -q "
                             "trace-domain -p domain=TEXT [-p subdomains=true|false])"),
    (["-q", "trace-domain", "-p", "domain=a", "-p", "sub=1"],
     "trace-domain: unknown parameter 'sub' (parameters: domain, subdomains)"),
    (["-q", "dns-top", "-p", "limit=ten"], "dns-top: parameter limit: not a whole number: "
                                           "'ten'"),
    (["-q", "dns-top", "-p", "since=yesterday"], "dns-top: parameter since: not an interval"),
    (["-q", "dns-top", "-p", "limit"], "a parameter is KEY=VALUE, not 'limit'"),
    (["-q", "dns-top", "-p", "limit=1", "-p", "limit=2"], "parameter limit given twice"),
    (["-q", "trace-domian", "-p", "domain=a"], "no saved query named 'trace-domian' (did you "
                                               "mean trace-domain?)"),
    (["-p", "a=1", "-e", "SELECT 1"], "-p needs -q NAME, or -f FILE whose header declares"),
    (["-p", "a=1"], "-p needs -q NAME"),
    (["-q", "listening", "-q", "connections"], "-q: one saved query per run"),
    (["--queries", "/nonexistent", "--list-queries"], "--queries: not a directory: "
                                                      "/nonexistent"),
])
def test_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    out = run_netsql(*args, env={"HOME": "/nonexistent"})
    line = one_line_usage_error(out)
    assert line.startswith("netsql: error: " + message), line


def test_usage_error_comes_before_any_capture() -> None:
    """A bad parameter fails at once, not after the capture window."""
    out = run_netsql("--capture", "60", "-q", "dns-top", "-p", "limit=x", timeout=20)
    one_line_usage_error(out)


def test_injection_attempt_is_just_a_string(tmp_path: Path) -> None:
    write(tmp_path, "echo", "-- description: Echo.\n-- param: v text (required) V.\n"
          "SELECT $v AS v, (SELECT count(*) FROM t) AS rows_in_t")
    evil = "x'; DROP TABLE t; --"
    out = run_netsql("-e", "CREATE TABLE t AS SELECT 1 AS i", "--queries", str(tmp_path),
                     "-q", "echo", "-p", f"v={evil}", "-e", "SELECT count(*) AS n FROM t",
                     "--json")
    assert out.returncode == 0, out.stderr
    assert arrays(out.stdout) == [[{"v": evil, "rows_in_t": 1}], [{"n": 1}]]
    # The same value through a shipped query, as its parameter.
    out = run_netsql("-e", "CREATE TABLE t AS SELECT 1 AS i", "-q", "trace-domain", "-p",
                     f"domain={evil}", "-e", "SELECT count(*) AS n FROM t", "--json")
    assert out.returncode == 0, out.stderr
    assert arrays(out.stdout) == [[], [{"n": 1}]]


def test_user_and_queries_dirs_from_the_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    write(cfg / "netsql" / "queries", "listening",
          "-- description: Overridden.\n-- param: port int = 22 P.\nSELECT $port AS port")
    env = {"XDG_CONFIG_HOME": str(cfg), "HOME": str(tmp_path)}
    out = run_netsql("-q", "listening", "-p", "port=8080", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"port": 8080}]
    more = tmp_path / "more"
    write(more, "listening", "-- description: Again.\nSELECT 'more' AS src")
    out = run_netsql("--queries", str(more), "-q", "listening", "--json", env=env)
    assert json.loads(out.stdout) == [{"src": "more"}]
    listed = json.loads(run_netsql("--queries", str(more), "--list-queries", "--json",
                                   env=env).stdout)
    mine = next(q for q in listed if q["name"] == "listening")
    assert (mine["origin"], mine["overrides"]) == (
        str(more), str(cfg / "netsql" / "queries" / "listening.sql"))


def test_query_by_path_and_saved_query_files_with_f(tmp_path: Path) -> None:
    f = write(tmp_path, "my_check", "-- description: Mine.\n-- param: n int = 2 N.\n"
              "SELECT $n * 10 AS x;\nSELECT 'second' AS s;")
    out = run_netsql("-q", str(f), "-p", "n=4", "--json")
    assert out.returncode == 0, out.stderr
    assert arrays(out.stdout) == [[{"x": 40}], [{"s": "second"}]]
    out = run_netsql("-f", str(f), "--json")  # its defaults are bound
    assert arrays(out.stdout) == [[{"x": 20}], [{"s": "second"}]]
    out = run_netsql("-f", str(f), "-p", "n=1", "--json")
    assert arrays(out.stdout) == [[{"x": 10}], [{"s": "second"}]]
    shipped = str(ROOT / "queries" / "listening.sql")
    out = run_netsql("-f", shipped, "-p", "protocol=tcp", "--json")
    assert out.returncode == 0, out.stderr
    assert all(r["protocol"] == "tcp" for r in json.loads(out.stdout))
    # A plain SQL file with comments is still plain SQL.
    plain = write(tmp_path, "plain", "-- just a comment\nSELECT 1 AS one;")
    assert json.loads(run_netsql("-f", str(plain), "--json").stdout) == [{"one": 1}]


def test_a_saved_query_file_is_valid_plain_sql() -> None:
    """Every shipped file parses as SQL with its header (comments) in place."""
    import duckdb

    for path in sorted((ROOT / "queries").glob("*.sql")):
        q = read_query(path, SHIPPED)
        stmts = duckdb.extract_statements(q.sql)
        assert stmts and all(s.query.strip() for s in stmts), path


def test_generated_references_are_current() -> None:
    for name in ("query-reference.md", "cli-reference.md"):
        path = ROOT / "docs" / name
        text = generated(ROOT)[path]
        assert path.read_text() == text, f"docs/{name} is stale: run python -m netsql.docgen"
    ref = (ROOT / "docs" / "query-reference.md").read_text()
    for name in SHIPPED_NAMES:
        assert f"\n## {name}\n" in ref
    cli = (ROOT / "docs" / "cli-reference.md").read_text()
    for flag in ("`-q NAME`", "`-p KEY=VALUE`", "`--list-queries`", "`--queries DIR`"):
        assert flag in cli


def test_how_to_doc_matches_the_code() -> None:
    """docs/queries.md: its example header parses, its type table and its error lines
    are what the code says."""
    import re

    from netsql.queries import TYPES

    text = (ROOT / "docs" / "queries.md").read_text()
    example = re.search(r"```sql\n(.*?)```", text, re.S)
    assert example is not None
    q = parse_query(example.group(1), "/d/trace-domain.sql")
    assert [(p.name, p.type, p.required) for p in q.params] == [
        ("domain", "text", True), ("subdomains", "bool", False), ("since", "interval", False)]
    q.check()
    for t in TYPES.values():
        row = f"| `{t.name}` | `{t.placeholder}` | {t.meaning} |".replace("true|false",
                                                                       "true\\|false")
        assert row in text, row
    for args in (["-q", "trace-domain"], ["-q", "trace-domain", "-p", "domian=x"],
                 ["-q", "dns-top", "-p", "limit=ten"], ["-q", "trace-domian"]):
        line = one_line_usage_error(run_netsql(*args, env={"HOME": "/nonexistent"}))
        assert f"\n{line}\n" in text, line
