"""Stage 1 of mechanism validation: the size cap and the AST policy, on the host.

Why a visitor that collects: one small method per node kind (RestrictedPython's own
transformer is the model) keeps each rule next to the node it reads, and collecting every
refusal lets the message name the first one in source order and say how many more there are.
Stage 1 only parses, it never compiles or runs anything (invariant 1); it duplicates some of
the sandbox's refusals on purpose, so either layer alone stops an escape (invariant 3).
"""

from __future__ import annotations

import ast

from bilevel.runtime.policy import Policy

MAX_AST_DEPTH = 60
MAX_NODES = 30_000
MAX_BRACKET_DEPTH = 40
# Invariant 3: names that would reach outside the policy layer if they existed in the sandbox
# (they do not; refusing them here gives a clear reason before a container starts).
FORBIDDEN_NAMES = frozenset({
    "eval", "exec", "compile", "open", "globals", "locals", "vars", "dir", "type", "super",
    "setattr", "delattr", "breakpoint", "input", "help", "memoryview", "bytearray", "bytes",
    "id", "hash", "exit", "quit", "classmethod", "staticmethod", "property", "print_function",
})
BLOCKED_ATTRS = frozenset({
    "format_map", "mro", "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code",
    "cr_await", "cr_origin", "ag_frame", "ag_code", "ag_await", "tb_frame", "tb_next",
    "f_back", "f_builtins", "f_code", "f_globals", "f_locals", "f_trace", "f_generator",
    "co_code", "co_consts", "co_names", "func_globals", "func_code", "func_closure",
    "im_func", "im_self", "with_traceback",
})
# Every kind here needs a `visit_<Kind> = _visit_forbidden` line in PolicyChecker.
FORBIDDEN_NODES = {
    ast.AsyncFunctionDef: "async functions", ast.AsyncFor: "async for", ast.AsyncWith: "async with",
    ast.Await: "await", ast.Global: "global statements", ast.Nonlocal: "nonlocal statements",
    ast.Match: "match statements (class patterns read attributes without the guard)",
    ast.TryStar: "except* (exception groups)",
}


class PolicyViolation(ValueError):
    """Stage 1 refused the source; the message names the line and the rule."""

    def __init__(self, message: str, stage: str = "ast") -> None:
        super().__init__(message)
        self.stage = stage


def _bracket_depth(source: str) -> int:
    """An upper bound of bracket nesting, found without the parser (which can be made to
    recurse deeply on a compile bomb)."""
    depth = deepest = 0
    for ch in source:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth = max(depth - 1, 0)
    return deepest


def _ast_depth(tree: ast.AST) -> tuple[int, int]:
    deepest, count, stack = 0, 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        count += 1
        deepest = max(deepest, d)
        if d > MAX_AST_DEPTH or count > MAX_NODES:
            break
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest, count


def _bad_name(name: str | None) -> bool:
    return bool(name) and name.startswith("_") and name != "_"


class PolicyChecker(ast.NodeVisitor):
    """Collects every AST policy refusal in a parsed mechanism, in visiting order.

    The policy layer of invariant 3, on the host: it reads the tree only, never compiles or
    runs it (invariant 1). The recursion is bounded: `check_source` refuses trees deeper than
    MAX_AST_DEPTH before a checker sees them.
    """

    def __init__(self, facades: set[str], mechanism: ast.ClassDef) -> None:
        self.facades = facades
        self.mechanism = mechanism            # the one top-level class Mechanism
        self.init_ok: set[int] = set()        # ids of __init__ defined directly in a class
        self.violations: list[tuple[tuple[int, int], str]] = []  # ((line, column), message)

    def refuse(self, node: ast.AST, why: str) -> None:
        line = getattr(node, "lineno", "?")
        where = (line if isinstance(line, int) else 1 << 30, getattr(node, "col_offset", 0))
        self.violations.append((where, f"line {line}: {why}"))

    def summary(self) -> str | None:
        """The first refusal in source order, and how many more; None if there were none."""
        if not self.violations:
            return None
        ordered = sorted(self.violations, key=lambda v: v[0])  # stable: ties keep visit order
        more = len(ordered) - 1
        return ordered[0][1] + (f" (and {more} more)" if more else "")

    def _visit_forbidden(self, node: ast.AST) -> None:
        for bad, what in FORBIDDEN_NODES.items():
            if isinstance(node, bad):
                self.refuse(node, f"{what} are not allowed")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_AsyncFor = visit_AsyncWith = visit_Await = _visit_forbidden
    visit_Global = visit_Nonlocal = visit_Match = visit_TryStar = _visit_forbidden

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if node.name == "Mechanism" and node is not self.mechanism:
            self.refuse(node, "a second class Mechanism")
        if _bad_name(node.name):
            self.refuse(node, f'class name "{node.name}" starts with "_"')
        if node.keywords:
            self.refuse(node, "class keywords (metaclass=...) are not allowed")
        self.init_ok.update(id(f) for f in node.body
                            if isinstance(f, ast.FunctionDef) and f.name == "__init__")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if _bad_name(node.name) and id(node) not in self.init_ok:
            self.refuse(node, f'function "{node.name}": only __init__ may start with "_"')
        self._check_parameters(node)
        self.generic_visit(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._check_parameters(node)
        self.generic_visit(node)

    def _check_parameters(self, node: ast.FunctionDef | ast.Lambda) -> None:
        a = node.args
        for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
            if arg is not None and _bad_name(arg.arg):
                self.refuse(node, f'parameter "{arg.arg}" starts with "_"')

    def visit_Name(self, node: ast.Name) -> None:
        if _bad_name(node.id):
            self.refuse(node, f'name "{node.id}" starts with "_"')
        if node.id in FORBIDDEN_NAMES:
            self.refuse(node, f'"{node.id}" is not available in the sandbox')
        if node.id == "Mechanism" and not isinstance(node.ctx, ast.Load):
            self.refuse(node, "rebinding Mechanism")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr.startswith("_") or node.attr in BLOCKED_ATTRS:
            self.refuse(node, f'attribute "{node.attr}" is not allowed')
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        if _bad_name(node.arg):
            self.refuse(node, f'keyword "{node.arg}" starts with "_"')
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if _bad_name(node.name):
            self.refuse(node, f'name "{node.name}" starts with "_"')
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self._check_modules(node, [a.name for a in node.names])
        self._check_aliases(node)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.refuse(node, "relative imports are not allowed")
        self._check_modules(node, [node.module])
        self._check_aliases(node)
        self.generic_visit(node)

    def _check_modules(self, node: ast.Import | ast.ImportFrom, modules: list[str | None]) -> None:
        for mod in modules:
            if mod not in self.facades:
                self.refuse(node, f"import of {mod!r} is not allowed (facades: {sorted(self.facades)})")

    def _check_aliases(self, node: ast.Import | ast.ImportFrom) -> None:
        for a in node.names:
            if a.name == "*" or _bad_name(a.name) or _bad_name(a.asname):
                self.refuse(node, f'import of "{a.name}" is not allowed')


def _parse(source: str) -> ast.Module:
    """Parse behind cheap caps on nesting and size, so the parser itself cannot be bombed."""
    if _bracket_depth(source) > MAX_BRACKET_DEPTH:
        raise PolicyViolation(f"brackets nested deeper than {MAX_BRACKET_DEPTH}")
    try:
        tree = ast.parse(source, "<mechanism>")
    except (SyntaxError, ValueError) as exc:
        raise PolicyViolation(f"not valid Python: {exc}") from None
    except (RecursionError, MemoryError):
        raise PolicyViolation("source too deeply nested to parse") from None
    depth, count = _ast_depth(tree)
    if depth > MAX_AST_DEPTH:
        raise PolicyViolation(f"syntax tree deeper than {MAX_AST_DEPTH}")
    if count > MAX_NODES:
        raise PolicyViolation(f"syntax tree larger than {MAX_NODES} nodes")
    return tree


def _the_mechanism(tree: ast.Module) -> ast.ClassDef:
    top = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Mechanism"]
    if len(top) != 1:
        raise PolicyViolation(
            "the source must define exactly one top-level class Mechanism"
            f" (found {len(top)})"
        )
    return top[0]


def check_source(source: str, policy: Policy) -> ast.Module:
    """Stage 1: size and AST policy. Parses only; never compiles or runs anything."""
    cap = int(policy.mechanism["max_source_kb"]) * 1024
    size = len(source.encode("utf-8", "replace"))
    if size > cap:
        raise PolicyViolation(f"source is {size} bytes, over the cap of {cap}", "size")
    tree = _parse(source)
    facades = set(policy.mechanism["facades"])
    checker = PolicyChecker(facades, _the_mechanism(tree))
    checker.visit(tree)
    message = checker.summary()
    if message is not None:
        raise PolicyViolation(message)
    return tree
