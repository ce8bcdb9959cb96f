"""The shape of the source tree, read from the files (parsed with `ast`, never imported).

(a) The project modules under runtime/, inner/, outer/ and sandbox/ (not outer/library/ or
sandbox/images/, which are data to the host) import each other without a cycle. Every import
counts, those inside functions too, and a package's `__init__` importing its own submodules is
an edge like any other.
(b) No trusted module (runtime/, inner/, outer/ but outer/library/) imports a library mechanism
or the in-container daemon and facades. Reading those files as data (importlib.resources,
open()) is fine: only imports count.

The checker is tested on small synthetic trees first, so that it cannot pass by seeing nothing.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from locations import ROOT

PARSED = ("runtime", "inner", "outer", "sandbox")
NOT_PARSED = ("outer/library", "sandbox/images")
TRUSTED = ("runtime", "inner", "outer")
UNTRUSTED = ("bilevel.outer.library", "bilevel.sandbox.images.mechanism")


def package_dirs(root: Path) -> dict[str, str]:
    """Source folder -> the package it is installed as, from pyproject's package-dir."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    return {folder: package for package, folder in config["tool"]["setuptools"]["package-dir"].items()}


@dataclass(frozen=True)
class Import:
    source: str      # the importing module
    target: str      # the project module it resolves to (a package means its __init__), else the name
    path: Path
    line: int
    resolved: bool = True

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(repr=False)
class Tree:
    modules: dict[str, Path]       # every parsed module -> its file
    known: set[str]                # every module, package or folder under the source folders
    imports: list[Import]          # every `bilevel...` import of a parsed module

    def __repr__(self) -> str:
        return f"Tree({len(self.modules)} modules, {len(self.imports)} imports)"

    @property
    def unresolved(self) -> list[str]:
        """`bilevel...` imports that name no module in the tree (they would fail when run)."""
        return [f"{i.where()}: {i.target}" for i in self.imports if not i.resolved]


def _dotted(rel: Path, package: str) -> str:
    parts = rel.with_suffix("").parts
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((package, *parts))


def _under(rel: str, folders: tuple[str, ...]) -> bool:
    return any(rel == f or rel.startswith(f + "/") for f in folders)


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[list[str], int]]:
    """Per import statement (anywhere, functions included): the absolute names it may mean,
    most specific first, and its line. `from X import n` may mean the module X.n or X."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield [alias.name], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                yield ([f"{base}.{alias.name}", base] if alias.name != "*" else [base]), node.lineno
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            yield [node.args[0].value], node.lineno        # importlib.import_module("bilevel...")


def _resolve(names: list[str], known: set[str]) -> str | None:
    """The first of the names (most specific first) that is a module, package or folder in the tree."""
    return next((name for name in names if name in known), None)


def scan(root: Path) -> Tree:
    dirs = package_dirs(root)
    known: set[str] = set()
    modules: dict[str, Path] = {}
    for folder, package in dirs.items():
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(base)
            if "__pycache__" in rel.parts or not (path.is_dir() or path.suffix == ".py"):
                continue
            name = _dotted(rel, package)
            known.add(name)
            in_root = str(path.relative_to(root))
            if path.suffix == ".py" and _under(in_root, PARSED) and not _under(in_root, NOT_PARSED):
                modules[name] = path
        known.add(package)
    imports = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for names, line in _imported(tree, module, path.name == "__init__.py"):
            if names[-1].split(".")[0] != "bilevel":
                continue
            target = _resolve(names, known)
            imports.append(Import(module, target or names[0], path.relative_to(root), line, target is not None))
    return Tree(modules, known, imports)


def find_cycles(tree: Tree) -> list[list[Import]]:
    """The cycles among the modules, as the imports that make them: in each strongly connected
    group of modules, the shortest cycle through each member (each cycle once)."""
    graph: dict[str, dict[str, Import]] = {m: {} for m in tree.modules}
    for imp in tree.imports:
        if imp.target in graph and imp.target != imp.source:      # a module naming itself is no edge
            graph[imp.source].setdefault(imp.target, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(v: str) -> None:                        # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles, seen = [], set()
    for group in sorted(groups):                        # a shortest cycle through each member
        members = set(group)
        for start in group:
            cycle = _shortest_cycle(graph, members, start)
            nodes = [imp.source for imp in cycle]
            first = nodes.index(min(nodes))
            cycle = cycle[first:] + cycle[:first]       # the same cycle, whichever member it was found from
            key = tuple(imp.source for imp in cycle)
            if key not in seen:
                seen.add(key)
                cycles.append(cycle)
    return cycles


def _shortest_cycle(graph: dict[str, dict[str, Import]], members: set[str], start: str) -> list[Import]:
    """Breadth first from `start`, inside its group, back to `start`."""
    paths: dict[str, list[Import]] = {start: []}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w, imp in sorted(graph[v].items()):
                if w == start:
                    return paths[v] + [imp]
                if w in members and w not in paths:
                    paths[w] = paths[v] + [imp]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is in a cycle group but on no cycle")


def describe(cycle: list[Import]) -> str:
    chain = " -> ".join([cycle[0].source, *(imp.target for imp in cycle)])
    return chain + "\n" + "\n".join(f"    {imp.source} imports {imp.target} at {imp.where()}" for imp in cycle)


def forbidden_imports(tree: Tree) -> list[Import]:
    """Imports by trusted modules of anything under the untrusted packages (resolved or not)."""
    return [imp for imp in tree.imports
            if _under(imp.path.as_posix(), TRUSTED) and not _under(imp.path.as_posix(), ("outer/library",))
            and any(imp.target == u or imp.target.startswith(u + ".") for u in UNTRUSTED)]


def make_tree(root: Path, files: dict[str, str]) -> Path:
    """A synthetic source tree: these files, and the real pyproject (for the package names)."""
    (root / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


# ---- the checker itself, on synthetic trees --------------------------------------------------


@pytest.mark.parametrize("files,want", [
    pytest.param({"runtime/a.py": "from bilevel.runtime import b\n",
                  "runtime/b.py": "def later():\n    from . import a\n",
                  "runtime/c.py": "import bilevel.runtime.a\n"},
                 ["bilevel.runtime.a -> bilevel.runtime.b -> bilevel.runtime.a"], id="relative-inside-a-function"),
    pytest.param({"runtime/pkg/__init__.py": "from . import mod\n",
                  "runtime/pkg/mod.py": "import bilevel.runtime.pkg\n"},
                 ["bilevel.runtime.pkg -> bilevel.runtime.pkg.mod -> bilevel.runtime.pkg"], id="package-init"),
    pytest.param({"runtime/x/__init__.py": "", "runtime/x/one.py": "from bilevel.runtime.x.two import f\n",
                  "runtime/x/two.py": "from ..y import three\ndef f(): pass\n",
                  "runtime/y/three.py": "def g():\n    import importlib\n"
                                        "    importlib.import_module('bilevel.runtime.x.one')\n"},
                 ["bilevel.runtime.x.one -> bilevel.runtime.x.two -> bilevel.runtime.y.three -> bilevel.runtime.x.one"],
                 id="three-modules-two-packages"),
    pytest.param({"runtime/hub.py": "from bilevel.runtime import left, right\n",
                  "runtime/left.py": "import bilevel.runtime.hub\n",
                  "runtime/right.py": "import bilevel.runtime.hub\n"},
                 ["bilevel.runtime.hub -> bilevel.runtime.left -> bilevel.runtime.hub",
                  "bilevel.runtime.hub -> bilevel.runtime.right -> bilevel.runtime.hub"], id="two-cycles-one-group"),
    pytest.param({"runtime/pkg/__init__.py": "", "runtime/pkg/a.py": "from bilevel.runtime.pkg import b\n",
                  "runtime/pkg/b.py": "from bilevel.runtime.pkg import NAME\n"},
                 [], id="from-package-import-submodule-is-no-edge-to-the-package"),
])
def test_the_checker_finds_cycles(tmp_path, files, want):
    tree = scan(make_tree(tmp_path, files))
    assert tree.unresolved == []
    cycles = find_cycles(tree)
    assert [describe(c).splitlines()[0] for c in cycles] == want
    for cycle in cycles:                                # each import named by file and line
        assert all(imp.where().startswith("runtime/") for imp in cycle)


def test_the_checker_resolves_modules_packages_and_names(tmp_path):
    tree = scan(make_tree(tmp_path, {
        "runtime/pkg/__init__.py": "X = 1\n", "runtime/pkg/engine.py": "",
        "runtime/user.py": "import bilevel.runtime.pkg\nfrom bilevel.runtime.pkg import engine, X\n"
                           "from bilevel.runtime.pkg.engine import thing\nimport json\n"
                           "from bilevel.nowhere import y\n"}))
    assert sorted((i.target, i.line) for i in tree.imports if i.resolved) == [
        ("bilevel.runtime.pkg", 1),             # a package is its __init__
        ("bilevel.runtime.pkg", 2),             # X: a name, not a module
        ("bilevel.runtime.pkg.engine", 2),      # engine: a module of the package
        ("bilevel.runtime.pkg.engine", 3)]
    assert tree.unresolved == ["runtime/user.py:5: bilevel.nowhere.y"]


def test_the_checker_finds_untrusted_imports(tmp_path):
    tree = scan(make_tree(tmp_path, {
        "outer/library/__init__.py": "", "outer/library/tabu.py": "class Mechanism:\n    pass\n",
        "outer/library/doe.py": "from bilevel.outer.library import tabu\n",          # untrusted: not checked
        "sandbox/images/mechanism/facades.py": "",
        "outer/strategy.py": "import bilevel.outer.library.tabu\n",
        "outer/research.py": "from . import library\n",
        "runtime/x.py": "def f():\n    from bilevel.sandbox.images.mechanism import facades\n",
        "runtime/reader.py": "from importlib import resources\n"                        # data, not an import
                             "SRC = resources.files('bilevel.outer.library').joinpath('tabu.py').read_text()\n",
        "runtime/images.py": "from bilevel.sandbox import images\n"}))
    assert sorted((i.source, i.target, i.line) for i in forbidden_imports(tree)) == [
        ("bilevel.outer.research", "bilevel.outer.library", 1),
        ("bilevel.outer.strategy", "bilevel.outer.library.tabu", 1),
        ("bilevel.runtime.x", "bilevel.sandbox.images.mechanism.facades", 2)]


# ---- the real tree ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project() -> Tree:
    return scan(ROOT)


def test_the_real_tree_is_seen(project):
    """The checks below see the modules they should, and every `bilevel...` import resolves."""
    assert len(project.modules) >= 30
    assert not any(m.startswith(UNTRUSTED) for m in project.modules)
    edges = {(i.source, i.target) for i in project.imports}
    assert ("bilevel.runtime.__main__", "bilevel.runtime.outputs.cli") in edges
    assert project.unresolved == []


def test_no_import_cycles(project):
    cycles = find_cycles(project)
    if cycles:
        pytest.fail("import cycles between project modules:\n" + "\n".join(describe(c) for c in cycles),
                    pytrace=False)


def test_trusted_code_never_imports_the_library_or_the_daemon(project):
    bad = forbidden_imports(project)
    if bad:
        pytest.fail("trusted modules import untrusted code:\n" + "\n".join(
            f"    {i.source} imports {i.target} at {i.where()}" for i in bad), pytrace=False)
