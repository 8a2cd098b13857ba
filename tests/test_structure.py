"""The code's structure holds: layer contracts (import-linter, in pyproject.toml), no
import cycles among netsql's modules, no private name imported across modules.

Imports are read with ast, so those inside functions and TYPE_CHECKING blocks count:
a cycle hidden in a function body is still a cycle.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "netsql"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, names) for every import in the module, anywhere in it; relative
    imports resolved. ``names``: what a ``from`` import takes (empty for ``import``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[:len(up) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            yield node.lineno, base, [a.name for a in node.names]


def graph() -> dict[str, set[str]]:
    """netsql module -> the netsql modules it imports (``from pkg import mod`` counts
    as importing ``pkg.mod``; every import of ``a.b.c`` as importing ``a.b.c`` only:
    a package's __init__ runs first, but its contents are not a dependency)."""
    mods = modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for _, target, names in imports(name, path):
            if not target.startswith("netsql"):
                continue
            hits = {f"{target}.{n}" for n in names if f"{target}.{n}" in mods}
            if len(hits) < len(names) or not names:
                hits.add(target)
            edges[name] |= {h for h in hits if h in mods and h != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    # A package's __init__ importing its own modules is the package's face, not a
    # cycle: leave those edges out (a module importing its package's __init__ back
    # still counts, and __init__ modules here import only from their own package).
    edges = graph()
    for name in edges:
        if (PACKAGE / Path(*name.split(".")[1:]) / "__init__.py").exists():
            edges[name] = {t for t in edges[name] if not t.startswith(name + ".")}
    assert cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_private_name_imported_across_modules() -> None:
    mods = modules()
    known = set(mods) | {module_name(p) for p in PACKAGE.rglob("*.c")}  # C extensions
    bad = []
    for name, path in mods.items():
        for line, target, names in imports(name, path):
            if not target.startswith("netsql"):
                continue
            for n in names:
                private = n.startswith("_") and not n.startswith("__")
                if private and f"{target}.{n}" not in known:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: from {target} import {n}")
    assert bad == []


def test_nothing_imports_the_entry_module() -> None:
    users = sorted(m for m, targets in graph().items() if "netsql.cli" in targets)
    assert users == ["netsql.__main__"]


def test_layer_contracts_hold() -> None:
    """The contracts of [tool.importlinter] in pyproject.toml (lint-imports)."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is missing: pip install -e '.[test]'")
    done = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "broken" in done.stdout and "0 broken" in done.stdout


def test_every_module_has_a_layer() -> None:
    """A new module is placed in the layer contract (pyproject.toml), so the contract
    constrains it too."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    layers = {name.strip() for c in contracts if c["type"] == "layers"  # "|": independent
              for layer in c["layers"] for name in re.split(r"[|:]", layer)}  # ":": not
    edges = graph()
    loose = [m for m, path in modules().items() if not any(
        m == layer or m.startswith(layer + ".") for layer in layers)
        and not (path.name == "__init__.py" and not edges[m])]  # an empty package face
    assert loose == []


def test_shared_format_names_match_the_formats() -> None:
    from netsql.context import FORMAT_NAMES, HUMAN_FORMATS
    from netsql.formats import format_names

    assert list(FORMAT_NAMES) == format_names()
    assert set(HUMAN_FORMATS) < set(FORMAT_NAMES)
