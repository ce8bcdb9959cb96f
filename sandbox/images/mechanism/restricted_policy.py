"""The RestrictedPython policy mechanisms run under: compile transformer, guards, builtins.

Why a policy layer inside the container: the container and the process are the wall
(invariant 3), but a mechanism that can walk the object graph could still corrupt the daemon
it shares a process with, forge replies, or burn the host's call deadline. The guards below
keep a mechanism inside its own instance state, and the fuel makes runaway loops fail the
same way on every replay. Stdlib + RestrictedPython only: this file is copied into the image.
"""

from __future__ import annotations

import ast
import builtins as _builtins
import types

from RestrictedPython import RestrictingNodeTransformer
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence
from RestrictedPython.transformer import INSPECT_ATTRIBUTES, copy_locations

# Invariant 3: one integer of this many bits is as large as sandbox arithmetic may make;
# `10**10**8` or `1 << 10**9` would otherwise pin the CPU or fill memory inside one C call.
MAX_INT_BITS = 100_000
MAX_SEQ_REPEAT = 10_000_000      # elements a `seq * n` may produce
MAX_RANGE = 10_000_000           # elements a `range(...)` may hold
MAX_COMBINATORIAL = 5_000        # argument cap of math.factorial / comb / perm

FUEL_NAME = "_fuel_"
BINOP_GUARDS = {ast.Pow: "_pow_", ast.Mult: "_mul_", ast.LShift: "_lshift_"}


class FuelExhausted(BaseException):
    """Raised when a hook call used up its step budget (a BaseException: `except Exception`
    inside the mechanism does not catch it, and the fuel stays empty if it is swallowed)."""


class Fuel:
    """A deterministic step budget: one tick per loop iteration and per function call."""

    __slots__ = ("limit", "left")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def reset(self, limit: int | None = None) -> None:
        if limit is not None:
            self.limit = limit
        self.left = self.limit

    @property
    def used(self) -> int:
        return self.limit - max(self.left, 0)

    @property
    def exhausted(self) -> bool:
        return self.left < 0

    def tick(self, value=None):
        # Invariant 3 (fuel): sticky; once below zero every further tick raises again, so an
        # `except BaseException: pass` inside a loop cannot keep the loop alive.
        self.left -= 1
        if self.left < 0:
            raise FuelExhausted("fuel exhausted")
        return value


# ---------------------------------------------------------------------------------------------
# Compile policy
# ---------------------------------------------------------------------------------------------


def _call(name: str, args: list[ast.expr], like: ast.AST) -> ast.Call:
    node = ast.Call(func=ast.Name(name, ast.Load()), args=args, keywords=[])
    copy_locations(node, like)
    return node


def _tick_stmt(like: ast.AST) -> ast.Expr:
    stmt = ast.Expr(_call(FUEL_NAME, [], like))
    copy_locations(stmt, like)
    return stmt


def _simple_load(node: ast.expr) -> ast.expr | None:
    """A load copy of `name`, `name.attr.attr` or a constant: re-evaluating it has no effects
    (sandbox classes cannot define properties or `__getattr__`)."""
    if isinstance(node, ast.Name):
        new: ast.expr = ast.Name(node.id, ast.Load())
    elif isinstance(node, ast.Constant):
        new = ast.Constant(node.value)
    elif isinstance(node, ast.Attribute):
        inner = _simple_load(node.value)
        if inner is None or isinstance(inner, ast.Constant):
            return None
        new = ast.Attribute(inner, node.attr, ast.Load())
    else:
        return None
    copy_locations(new, node)
    return new


def _load_copy(target: ast.expr) -> ast.expr | None:
    """`self.x` / `self.d[k]` as a load, when evaluating it twice cannot change what it means."""
    if isinstance(target, ast.Attribute):
        return _simple_load(target)
    if isinstance(target, ast.Subscript):
        base, key = _simple_load(target.value), _simple_load(target.slice)
        if base is None or key is None or isinstance(base, ast.Constant):
            return None
        node = ast.Subscript(base, key, ast.Load())
        copy_locations(node, target)
        return node
    return None


class FuelPolicy(RestrictingNodeTransformer):
    """RestrictedPython's transformer plus fuel ticks, big-number guards and a few refusals."""

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        # Invariant 3: no special methods but __init__; `__eq__`/`__lt__`/`__hash__` objects
        # must not exist to be smuggled into results or to run code during comparisons.
        if node.name.startswith("_") and node.name != "__init__":
            self.error(node, f'method "{node.name}": only __init__ may start with "_"')
        node = super().visit_FunctionDef(node)
        # Invariant 3 (fuel): every call of a sandbox function costs one tick.
        node.body.insert(0, _tick_stmt(node))
        return node

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        node = super().visit_Lambda(node)
        node.body = _call(FUEL_NAME, [node.body], node.body)
        return node

    def visit_While(self, node: ast.While) -> ast.AST:
        node = super().visit_While(node)
        # Invariant 3 (fuel): every iteration costs one tick (`for` loops and comprehensions
        # pay in `_getiter_`).
        node.body.insert(0, _tick_stmt(node))
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        node = super().visit_BinOp(node)
        guard = BINOP_GUARDS.get(type(node.op))
        if guard is None:
            return node
        # Invariant 3: `**`, `*` and `<<` check operand sizes before the C call (no constant
        # folding either, since the operation is now a call).
        return _call(guard, [node.left, node.right], node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        load = _load_copy(node.target)
        if load is None:
            return super().visit_AugAssign(node)
        # `self.n += 1` / `d[k] += 1` become plain assignments, so the write goes through
        # `_write_`, the read through `_getattr_`/`_getitem_` and the operator through its guard.
        assign = ast.Assign(targets=[node.target], value=ast.BinOp(load, node.op, node.value))
        copy_locations(assign, node)
        copy_locations(assign.value, node)
        return self.visit(assign)

    def visit_Global(self, node: ast.Global) -> ast.AST:
        self.not_allowed(node)


def compile_mechanism(source: str) -> tuple[types.CodeType | None, list[str]]:
    """Compile under FuelPolicy; returns (code, errors)."""
    from RestrictedPython import compile_restricted_exec

    result = compile_restricted_exec(source, filename="<mechanism>", policy=FuelPolicy)
    return result.code, list(result.errors)


# ---------------------------------------------------------------------------------------------
# Guards
# ---------------------------------------------------------------------------------------------

# Invariant 3: objects that lead out of the sandbox: modules, frames, code, tracebacks, cells,
# and generators/coroutines (whose frames hold the daemon's locals).
OPAQUE_TYPES = (
    types.ModuleType,
    types.FrameType,
    types.CodeType,
    types.TracebackType,
    types.CellType,
    types.GeneratorType,
    types.CoroutineType,
    types.AsyncGeneratorType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.MappingProxyType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)
HANDED_OUT_REFUSED = (
    types.ModuleType,
    types.FrameType,
    types.CodeType,
    types.TracebackType,
    types.CellType,
    types.MappingProxyType,
)
BLOCKED_ATTRS = frozenset(INSPECT_ATTRIBUTES) | {
    "mro", "format_map", "func_globals", "func_code", "func_closure", "im_func", "im_self",
    "gi_running", "gi_suspended", "cr_running", "cr_suspended", "ag_running",
    "tb_lasti", "tb_lineno", "f_lasti", "f_lineno", "co_consts", "co_names",
    "with_traceback", "add_note",
}


def _check_format_fields(fmt: str, depth: int = 0) -> None:
    """Refuse `{0.attr}` / `{0[key]}` fields (and nested ones inside format specs)."""
    import string

    if depth > 2:
        raise ValueError("format spec nested too deeply")
    for _literal, field, spec, _conv in string.Formatter().parse(fmt):
        if field is not None and ("." in field or "[" in field):
            raise ValueError(f"format field {field!r}: attribute and item access are not allowed")
        if spec:
            _check_format_fields(spec, depth + 1)


def _safe_format(text: str):
    """`str.format` with plain positional/keyword fields only."""

    def fmt(*args, **kwargs):
        _check_format_fields(text)
        return text.format(*args, **kwargs)

    return fmt


class Guards:
    """The guard functions for one sandbox; `sandbox_classes` are the classes its code made."""

    def __init__(self, fuel: Fuel) -> None:
        self.fuel = fuel
        self.sandbox_classes: set[type] = set()
        self.item_types: set[type] = {dict, list, tuple, str, range}
        self.mutable_types: set[type] = {dict, list}

    def add_container_types(self, *types_: type) -> None:
        """Facade container types (deque, Counter, ...) behave like dict/list for the guards."""
        for t in types_:
            self.item_types.add(t)
            self.mutable_types.add(t)

    # Invariant 3: attribute reads.
    def getattr(self, obj, name, *default):
        if type(name) is not str:
            raise TypeError("attribute name must be a str")
        if name.startswith("_") or name in BLOCKED_ATTRS:
            raise AttributeError(f'attribute "{name}" is not allowed in the sandbox')
        if isinstance(obj, OPAQUE_TYPES):
            raise AttributeError(f"attributes of {type(obj).__name__} objects are not allowed")
        if name == "format" and (isinstance(obj, str) or obj is str):
            if obj is str:
                raise AttributeError("str.format is only allowed on a string value")
            return _safe_format(obj)
        try:
            value = getattr(obj, name)
        except AttributeError:
            if default:
                return default[0]
            raise
        if isinstance(value, HANDED_OUT_REFUSED):
            raise AttributeError(f"{type(value).__name__} objects are not handed out")
        return value

    def hasattr(self, obj, name) -> bool:
        try:
            self.getattr(obj, name)
        except (AttributeError, TypeError):
            return False
        return True

    # Invariant 3: item reads only on plain containers.
    def getitem(self, obj, key):
        if type(obj) not in self.item_types:
            raise TypeError(f"item access on {type(obj).__name__} objects is not allowed")
        return obj[key]

    # Invariant 3: writes only to plain containers and to instances of sandbox classes.
    def write(self, obj):
        t = type(obj)
        if t in self.mutable_types or t in self.sandbox_classes:
            return obj
        raise TypeError(f"{t.__name__} objects are read-only in the sandbox")

    # Invariant 3 (fuel): iteration.
    def getiter(self, obj):
        it = iter(obj)
        tick = self.fuel.tick
        for item in it:
            tick()
            yield item

    def iter_unpack_sequence(self, it, spec, getiter):
        return guarded_iter_unpack_sequence(it, spec, getiter)

    def unpack_sequence(self, it, spec, getiter):
        return guarded_unpack_sequence(it, spec, getiter)

    # Invariant 3: big-number guards.
    @staticmethod
    def pow(a, b):
        if type(a) in (int, bool) and type(b) in (int, bool) and b > 0:
            if max(a.bit_length(), 1) * b > MAX_INT_BITS:
                raise OverflowError(f"integer power too large (cap {MAX_INT_BITS} bits)")
        return a**b

    @staticmethod
    def mul(a, b):
        ta, tb = type(a), type(b)
        if ta in (int, bool) and tb in (int, bool):
            if a.bit_length() + b.bit_length() > MAX_INT_BITS:
                raise OverflowError(f"integer product too large (cap {MAX_INT_BITS} bits)")
        elif ta in (str, list, tuple) and tb in (int, bool):
            if len(a) * b > MAX_SEQ_REPEAT:
                raise MemoryError(f"repetition too large (cap {MAX_SEQ_REPEAT})")
        elif tb in (str, list, tuple) and ta in (int, bool):
            if len(b) * a > MAX_SEQ_REPEAT:
                raise MemoryError(f"repetition too large (cap {MAX_SEQ_REPEAT})")
        return a * b

    @staticmethod
    def lshift(a, b):
        if type(b) in (int, bool) and b > MAX_INT_BITS:
            raise OverflowError(f"shift too large (cap {MAX_INT_BITS} bits)")
        if type(a) in (int, bool) and a.bit_length() + max(b, 0) > MAX_INT_BITS:
            raise OverflowError(f"shift too large (cap {MAX_INT_BITS} bits)")
        return a << b

    def inplacevar(self, op: str, x, y):
        # Written out per operator: nothing is looked up by the operator string.
        if op == "+=":
            return x + y
        if op == "-=":
            return x - y
        if op == "*=":
            return self.mul(x, y)
        if op == "/=":
            return x / y
        if op == "//=":
            return x // y
        if op == "%=":
            return x % y
        if op == "**=":
            return self.pow(x, y)
        if op == "<<=":
            return self.lshift(x, y)
        if op == ">>=":
            return x >> y
        if op == "|=":
            return x | y
        if op == "&=":
            return x & y
        if op == "^=":
            return x ^ y
        raise TypeError(f"operator {op!r} is not allowed")

    @staticmethod
    def apply(func, *args, **kwargs):
        # `f(*args, **kw)`: the call itself needs no extra guard; the callee is sandbox code
        # or a curated builtin.
        return func(*args, **kwargs)

    def metaclass(self, name, bases, namespace):
        """Every `class` statement: records the class as sandbox-made (writable instances)."""
        for key in namespace:
            if key.startswith("_") and key not in CLASS_DUNDERS:
                raise TypeError(f"class attribute {key!r} is not allowed")
        for base in bases:
            builtin_exc = (isinstance(base, type) and issubclass(base, Exception)
                           and base.__module__ == "builtins")
            if base is not object and base not in self.sandbox_classes and not builtin_exc:
                what = getattr(base, "__name__", "?")
                raise TypeError(f"class {name}: base {what!r} is not allowed")
        cls = type(name, bases, dict(namespace))
        self.sandbox_classes.add(cls)
        return cls


CLASS_DUNDERS = frozenset({
    "__module__", "__qualname__", "__init__", "__doc__", "__static_attributes__",
    "__firstlineno__",
})


class CappedPrint:
    """`print` inside the sandbox: captured, never written to the protocol stream, capped."""

    def __init__(self, sink: list, cap: int) -> None:
        self.sink = sink          # shared per-call buffer: [text_parts, size]
        self.cap = cap
        self.txt: list[str] = []
        self.size = 0

    def write(self, text: str) -> None:
        text = str(text)
        room = self.cap - self.sink[1]
        if room > 0:
            self.sink[0].append(text[:room])
        self.sink[1] += min(len(text), max(room, 0))
        if self.size < self.cap:
            self.txt.append(text[: self.cap - self.size])
            self.size += len(self.txt[-1])

    def flush(self) -> None:
        pass

    def __call__(self) -> str:
        return "".join(self.txt)

    def _call_print(self, *objects, **kwargs):
        # Invariant 3: print goes to this collector only; `file=` is refused.
        if kwargs.pop("file", None) is not None:
            raise TypeError("print(file=...) is not allowed")
        print(*objects, file=self, **kwargs)


def build_globals(guards: Guards, builtins: dict, print_sink: list, print_cap: int) -> dict:
    """A fresh globals dict for one mechanism: builtins plus RestrictedPython's hook names."""
    return {
        "__builtins__": builtins,
        "__name__": "mechanism",
        "__metaclass__": guards.metaclass,
        "_getattr_": guards.getattr,
        "_getitem_": guards.getitem,
        "_write_": guards.write,
        "_getiter_": guards.getiter,
        "_iter_unpack_sequence_": guards.iter_unpack_sequence,
        "_unpack_sequence_": guards.unpack_sequence,
        "_inplacevar_": guards.inplacevar,
        "_apply_": guards.apply,
        "_print_": lambda _getattr_=None: CappedPrint(print_sink, print_cap),
        FUEL_NAME: guards.fuel.tick,
        "_pow_": guards.pow,
        "_mul_": guards.mul,
        "_lshift_": guards.lshift,
    }


# ---------------------------------------------------------------------------------------------
# Builtins
# ---------------------------------------------------------------------------------------------

SAFE_EXCEPTIONS = (
    ArithmeticError, AssertionError, AttributeError, Exception, IndexError, KeyError,
    LookupError, NameError, NotImplementedError, OverflowError, RuntimeError, StopIteration,
    TypeError, ValueError, ZeroDivisionError,
)


def build_builtins(guards: Guards, import_facade) -> dict:
    """The sandbox's `__builtins__`: curated, and every C-level consumer of an iterable pays fuel.

    Invariant 3: no `type`, `getattr` without guard, `vars`, `dir`, `globals`, `open`, `eval`,
    `exec`, `compile`, `id`, `hash` (addresses and salted hashes would also break replay).
    """
    it = guards.getiter

    def consume(fn, *, keep_two=False):
        def wrapped(*args, **kwargs):
            if args and not (keep_two and len(args) > 1):
                args = (it(args[0]), *args[1:])
            return fn(*args, **kwargs)

        wrapped.__name__ = fn.__name__
        return wrapped

    def safe_range(*args):
        r = range(*args)
        if len(r) > MAX_RANGE:
            raise MemoryError(f"range too large (cap {MAX_RANGE})")
        return r

    def safe_dict(*args, **kwargs):
        if args and type(args[0]) not in guards.item_types:
            args = (it(args[0]),)
        return dict(*args, **kwargs)

    def safe_pow(a, b):
        return guards.pow(a, b)

    b: dict = {
        "None": None, "True": True, "False": False,
        # Classes are built through `__metaclass__` (Guards.metaclass), which records them.
        "__build_class__": _builtins.__build_class__,
        "__import__": import_facade,
        "abs": abs, "bool": bool, "callable": callable, "chr": chr, "divmod": divmod,
        "enumerate": enumerate, "filter": filter, "float": float, "int": int,
        "isinstance": isinstance, "issubclass": issubclass, "len": len, "map": map,
        "next": next, "object": object, "ord": ord, "repr": repr, "reversed": reversed,
        "round": round, "slice": slice, "str": str, "zip": zip, "bin": bin, "hex": hex,
        "oct": oct, "pow": safe_pow, "range": safe_range, "dict": safe_dict,
        "iter": lambda obj: it(obj),
        "getattr": guards.getattr, "hasattr": guards.hasattr,
        "list": consume(list), "tuple": consume(tuple), "set": consume(set),
        "frozenset": consume(frozenset), "sorted": consume(sorted), "sum": consume(sum),
        "any": consume(any), "all": consume(all),
        "min": consume(min, keep_two=True), "max": consume(max, keep_two=True),
    }
    for exc in SAFE_EXCEPTIONS:
        b[exc.__name__] = exc
    return b
