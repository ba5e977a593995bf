"""Expression strings parsed by a whitelist (never ``eval``), for user models.

:meth:`gradcheck_lab.Model.from_expr` builds a model around the tree this
module returns; this module knows nothing of models (model imports expr,
never the reverse: tests/test_imports.py).

Security stance, first: an expression string is untrusted input. It is never
handed to ``eval``, ``exec``, ``compile`` (to run), ``sympy.sympify`` or
``parse_expr``: each of those runs Python code, and a string such as
``"__import__('os').system(...)"`` would run with the user's rights. Here the
text only goes through ``ast.parse(text, mode="eval")``, which builds a syntax
tree and runs nothing; an explicit whitelist then walks that tree and copies
what it allows into a small immutable tree of our own (:class:`Num`,
:class:`Name`, :class:`Neg`, :class:`Pos`, :class:`BinOp`, :class:`Call`).
Everything else is rejected with :class:`~gradcheck_lab.errors.ExpressionError`
before any value is computed. Engines read the user model only through
:func:`evaluate`, which interprets our tree against an ``ops`` backend.

Grammar
-------
::

    expr   := expr ("+" | "-") term  | term
    term   := term ("*" | "/") unary | unary
    unary  := ("+" | "-") unary      | power
    power  := atom ["**" unary]                 (right-associative)
    atom   := NUMBER | NAME | FUNC "(" expr ")" | "(" expr ")"
            | "huber" "(" expr ["," ["delta" "="] expr] ")"   (delta: a constant > 0)

``NUMBER`` is an int or float literal (no complex, bool, string or ``None``);
``NAME`` is a declared parameter, input or target; ``FUNC`` is one of
:data:`UNARY_FUNCTIONS` (the one-argument functions of
:data:`gradcheck_lab.ops.FUNCTIONS`). ``sum`` and ``logsumexp`` take lists in
``ops`` and are rejected: write ``a + b`` or ``log(exp(a) + exp(b))``.
``huber``'s optional ``delta`` (default 1) must be a constant expression
with a positive value (:data:`CONSTANT_ARGUMENTS`).

How it works
------------
1. The raw text is checked before parsing: a string, at most
   :data:`MAX_LENGTH` characters, printable ASCII only (Python folds Unicode
   identifiers with NFKC, so ``ｅｘｐ`` would silently become ``exp``: any
   non-ASCII character is rejected at its column), brackets nested at most
   :data:`MAX_DEPTH` deep (this keeps the parser away from its own limits).
2. ``ast.parse`` builds the tree; ``SyntaxError`` (and ``RecursionError``,
   ``MemoryError``, ``ValueError`` on pathological input) become
   :class:`ExpressionError`.
3. The whitelist walk allows at most :data:`MAX_DEPTH` levels of nesting
   (``a + b + c`` is two levels: the chain nests to the left) and
   :data:`MAX_NODES` nodes, literals of magnitude at most :data:`MAX_LITERAL`,
   and constant exponents of magnitude at most :data:`MAX_EXPONENT`. Every
   constant subexpression is computed once in bounded float arithmetic
   (``math.pow``, never an unbounded integer power), so ``2**2**2**2**2`` and
   ``log(0)`` are rejected at their column instead of hanging or failing
   later.

Every rejection names the offending token and its 0-based column
(``ExpressionError.position``) and reads "Expected ... but got ...; what to do".
"""

from __future__ import annotations

import ast
import difflib
import keyword
import math
import operator
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .errors import ExpressionError
from .ops import FUNCTIONS, backend

__all__ = [
    "parse",
    "evaluate",
    "unparse",
    "check_names",
    "split_names",
    "names_used",
    "Node",
    "Num",
    "Name",
    "Neg",
    "Pos",
    "BinOp",
    "Call",
    "UNARY_FUNCTIONS",
    "CONSTANT_ARGUMENTS",
    "MAX_LENGTH",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_EXPONENT",
    "MAX_LITERAL",
]

#: Longest accepted expression, in characters.
MAX_LENGTH = 2_000
#: Deepest accepted nesting: of brackets in the text and of the syntax tree.
MAX_DEPTH = 50
#: Most nodes (numbers, names, operators, calls) in one expression.
MAX_NODES = 500
#: Largest magnitude of a constant exponent (``x**64`` is fine, ``x**65`` not).
MAX_EXPONENT = 64
#: Largest magnitude of a numeric literal and of any constant subexpression.
MAX_LITERAL = 1e300

#: Functions an expression may call: the one-argument functions of ``ops``.
UNARY_FUNCTIONS: tuple[str, ...] = tuple(f for f in FUNCTIONS if f not in ("sum", "logsumexp"))
#: Functions that take an optional second argument, a positive constant that
#: shapes them (``huber(z, 2.0)``, also ``huber(z, delta=2.0)``): its name.
CONSTANT_ARGUMENTS: dict[str, str] = {"huber": "delta"}
_LIST_FUNCTIONS = ("sum", "logsumexp")


# ---------------------------------------------------------------- the tree
# ``pos`` is the 0-based column in the source text; it does not take part in
# equality, so ``parse("x+1") == parse("x + 1")``.
@dataclass(frozen=True)
class Num:
    """A finite int or float literal (ints stay ints: SymPy sees ``x**2``)."""

    value: int | float
    pos: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Name:
    """A declared parameter, input or target."""

    id: str
    pos: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Neg:
    """Unary minus."""

    operand: Node
    pos: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Pos:
    """Unary plus (evaluates to its operand)."""

    operand: Node
    pos: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class BinOp:
    """``left op right`` with ``op`` one of ``+ - * / **``."""

    op: str
    left: Node
    right: Node
    pos: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Call:
    """``func(args...)`` with ``func`` in :data:`UNARY_FUNCTIONS`.

    One argument, except a function of :data:`CONSTANT_ARGUMENTS`, which may
    have a second: a constant subtree (its positive value is checked at parse time).
    """

    func: str
    args: tuple[Node, ...]
    pos: int | None = field(default=None, compare=False, repr=False)


Node = Num | Name | Neg | Pos | BinOp | Call

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_OTHER_OPS = {
    ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>",
    ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&", ast.Not: "not", ast.Invert: "~",
}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow}
#: Constant folding at parse time: floats only, and ``math.pow`` (bounded: it
#: raises OverflowError where ``int ** int`` would compute for ever).
_FOLD = {**_ARITH, "**": math.pow}
_FOLD_ERRORS = (ArithmeticError, ValueError)
#: Disallowed syntax, with the child that comes before the offending token
#: (walked first, so the leftmost error is the one reported).
_DESCRIBE = {
    ast.Attribute: ("attribute access", "value"),
    ast.Subscript: ("a subscript", "value"),
    ast.Compare: ("a comparison", "left"),
    ast.IfExp: ("a conditional expression", "body"),
    ast.BoolOp: ("a boolean operator", None),
    ast.Lambda: ("a lambda", None),
    ast.NamedExpr: ("an assignment expression", None),
    ast.JoinedStr: ("an f-string", None),
    ast.Starred: ("a starred expression", None),
    ast.ListComp: ("a comprehension", None),
    ast.SetComp: ("a comprehension", None),
    ast.DictComp: ("a comprehension", None),
    ast.GeneratorExp: ("a comprehension", None),
    ast.List: ("a list", None),
    ast.Tuple: ("a tuple", None),
    ast.Set: ("a set", None),
    ast.Dict: ("a dict", None),
}


def _snippet(text: str, start: int, end: int | None = None) -> str:
    s = text[start:end] if end is not None else text[start:]
    return s if len(s) <= 30 else s[:27] + "..."


def _plain(v: Any) -> bool:
    """A Python int or float (not bool, not a backend value)."""
    return type(v) in (int, float)


def _number(v: int | float) -> int | float:
    """Keep ints exact where float64 is (|v| <= 2**53); beyond, a float for every backend."""
    return float(v) if type(v) is int and abs(v) > 2**53 else v


def check_names(names: Iterable[str]) -> tuple[str, ...]:
    """Declared names in order; raises unless each is a plain, unique ASCII identifier."""
    out: list[str] = []
    for n in names:
        if not isinstance(n, str):
            raise ExpressionError(f"Expected variable names as strings but got {n!r} (type={type(n).__name__}).")
        if not (n.isascii() and n.isidentifier()) or keyword.iskeyword(n):
            why = "an ASCII identifier that is not a Python keyword"
        elif n.startswith("_"):
            why = "a name not starting with '_'"
        elif n in FUNCTIONS:
            why = f"a name that is not a function ({', '.join(FUNCTIONS)})"
        elif n in out:
            why = "distinct names"
        else:
            out.append(n)
            continue
        raise ExpressionError(f"Expected {why} but got variable name {n!r}; rename it.")
    return tuple(out)


# ---------------------------------------------------------------- parsing
def parse(text: str, names: Iterable[str]) -> Node:
    """The whitelisted tree of ``text``, whose names must be among ``names``.

    Raises :class:`~gradcheck_lab.errors.ExpressionError` (with ``position``,
    the 0-based column of the offending token) for anything outside the
    grammar of this module; nothing in ``text`` is ever run.

    >>> parse("w*x**2", {"w", "x"})
    BinOp(op='*', left=Name(id='w'), right=BinOp(op='**', left=Name(id='x'), right=Num(value=2)))
    """
    declared = check_names(sorted(names) if isinstance(names, (set, frozenset)) else split_names(names, "names"))
    if not isinstance(text, str):
        raise ExpressionError(f"Expected an expression string but got {text!r} (type={type(text).__name__}).")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"Expected at most {MAX_LENGTH} characters but got {len(text)}; "
            "split the model into smaller expressions or use Model.from_function.",
            text,
            MAX_LENGTH,
        )
    if not text.strip():
        raise ExpressionError("Expected an expression such as 'w*x + b' but got an empty string.", text, 0)
    depth = 0
    for col, ch in enumerate(text):
        if ch == "#":
            raise ExpressionError(
                f"Expected no comment but got '#' at column {col}; remove the comment.", text, col
            )
        if not " " <= ch <= "~":
            raise ExpressionError(
                f"Expected printable ASCII characters only but got {ch!r} (U+{ord(ch):04X}) at column {col}; "
                "retype it (look-alike letters and full-width characters are not accepted).",
                text,
                col,
            )
        depth += (ch in "([{") - (ch in ")]}")
        if depth > MAX_DEPTH:
            raise ExpressionError(
                f"Expected brackets nested at most {MAX_DEPTH} deep but got deeper at column {col}; "
                "simplify the expression.",
                text,
                col,
            )
    body = text.lstrip(" ")  # the parser refuses leading spaces ("unexpected indent")
    shift = len(text) - len(body)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. an invalid escape in a (rejected) string
            tree = ast.parse(body, mode="eval")
    except SyntaxError as exc:
        # offset is 1-based; 0 means the end of the text ("x +").
        col = len(text) if not exc.offset or exc.offset < 1 else min(exc.offset - 1 + shift, len(text))
        got = "the end of the text" if col >= len(text.rstrip(" ")) else "a syntax error"
        raise ExpressionError(
            f"Expected a complete expression but got {got} ({exc.msg}) at column {col}; "
            "check the brackets and operators there.",
            text,
            col,
        ) from None
    except (RecursionError, MemoryError, ValueError, OverflowError):
        raise ExpressionError(
            "Expected an expression Python's parser can read but got one too complex for it; simplify it.", text
        ) from None
    stack: list[ast.AST] = [tree] if shift else []  # columns of the stripped text -> columns of ``text``
    while stack:
        n = stack.pop()
        stack.extend(ast.iter_child_nodes(n))
        for attr in ("col_offset", "end_col_offset"):
            if getattr(n, attr, None) is not None:
                setattr(n, attr, getattr(n, attr) + shift)
    return _Walker(text, declared).walk(tree.body, 1)[0]


class _Walker:
    """One whitelist walk: builds our tree and the value of every constant subtree."""

    def __init__(self, text: str, declared: tuple[str, ...]):
        self.text = text
        self.declared = declared
        self.count = 0

    def fail(self, col: int | None, expected: str, got: str, todo: str) -> NoReturn:
        """Raise "Expected ... but got ... at column N; todo" pointing at ``col``."""
        raise ExpressionError(f"Expected {expected} but got {got} at column {col}; {todo}", self.text, col)

    def token(self, start: int, end: int | None) -> str:
        return repr(_snippet(self.text, start, end))

    def after(self, child: ast.expr) -> int:
        """Column of the first token after ``child`` (skipping spaces and closing brackets)."""
        col = child.end_col_offset or 0
        while col < len(self.text) and self.text[col] in " )":
            col += 1
        return col

    def walk(self, n: ast.expr, depth: int) -> tuple[Node, float | None]:
        """``(node, value)``; ``value`` is the float value of a constant subtree, else None."""
        col = getattr(n, "col_offset", None)
        if depth > MAX_DEPTH:
            self.fail(col, f"at most {MAX_DEPTH} levels of nesting (a chain a + b + c nests one level per operator)",
                      "more", "simplify the expression.")
        self.count += 1
        if self.count > MAX_NODES:
            self.fail(col, f"at most {MAX_NODES} numbers, names and operators", "more", "simplify the expression.")
        if isinstance(n, ast.Constant):
            return self.constant(n)
        if isinstance(n, ast.Name):
            return self.name(n), None
        if isinstance(n, ast.UnaryOp) and type(n.op) in (ast.USub, ast.UAdd):
            node, value = self.walk(n.operand, depth + 1)
            if isinstance(n.op, ast.USub):
                return Neg(node, col), None if value is None else -value
            return Pos(node, col), value
        if isinstance(n, ast.BinOp) and type(n.op) in _BINOPS:
            return self.binop(n, _BINOPS[type(n.op)], depth)
        if isinstance(n, ast.Call):
            return self.call(n, depth)
        self.reject(n, depth)

    def reject(self, n: ast.expr, depth: int) -> NoReturn:
        """Raise for syntax outside the whitelist, at its offending token (leftmost error first)."""
        col = n.col_offset
        if isinstance(n, (ast.BinOp, ast.UnaryOp)):
            if isinstance(n, ast.BinOp):
                self.walk(n.left, depth + 1)
                col = self.after(n.left)
            sym = _OTHER_OPS.get(type(n.op), type(n.op).__name__)
            todo = "write ** for a power." if sym == "^" else "only + - * / ** are allowed."
            self.fail(col, "one of + - * / **", f"the operator {sym!r}", todo)
        what, first = _DESCRIBE.get(type(n), (f"{type(n).__name__!r} syntax", None))
        child = getattr(n, first) if first else n.values[0] if isinstance(n, ast.BoolOp) else None
        if child is not None:
            self.walk(child, depth + 1)
            col = self.after(child)
        self.fail(col, "numbers, declared names, + - * / ** and calls such as exp(...)",
                  f"{what} {self.token(col, n.end_col_offset)}", "rewrite it with arithmetic only.")

    def constant(self, n: ast.Constant) -> tuple[Node, float]:
        v, col = n.value, n.col_offset
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            kinds = {bool: "a boolean", str: "a string", bytes: "a bytes string", complex: "a complex number"}
            got = f"{kinds.get(type(v), 'the constant')} {self.token(col, n.end_col_offset)}"
            self.fail(col, "a real number", got, "use int or float literals only.")
        if not abs(v) <= MAX_LITERAL:  # also catches inf and NaN; ints compare exactly
            self.fail(col, f"a finite number of magnitude at most {MAX_LITERAL:g}",
                      self.token(col, n.end_col_offset), "rescale the model.")
        return Num(_number(v), col), float(v)

    def name(self, n: ast.Name) -> Name:
        col, id_, names = n.col_offset, n.id, ", ".join(self.declared)
        if id_ in self.declared:
            return Name(id_, col)
        if id_ in FUNCTIONS:
            self.fail(col, f"a declared name ({names})", f"the function {id_!r} without arguments",
                      f"call it as {id_}(...).")
        close = difflib.get_close_matches(id_, [*self.declared, *UNARY_FUNCTIONS], n=1)
        todo = f"did you mean {close[0]}?" if close else "declare it as a parameter or input, or fix the spelling."
        self.fail(col, f"a declared name ({names}) or a function ({', '.join(UNARY_FUNCTIONS)})",
                  repr(_snippet(id_, 0)), todo)

    def binop(self, n: ast.BinOp, op: str, depth: int) -> tuple[Node, float | None]:
        left, a = self.walk(n.left, depth + 1)
        right, b = self.walk(n.right, depth + 1)
        if op == "**" and b is not None and abs(b) > MAX_EXPONENT:
            at = n.right.col_offset
            self.fail(at, f"a constant exponent of magnitude at most {MAX_EXPONENT}",
                      f"{self.token(at, n.right.end_col_offset)} (= {b:g})",
                      "large powers overflow every backend.")
        value = None if a is None or b is None else self.fold(n, _FOLD[op], a, b)
        return BinOp(op, left, right, self.after(n.left)), value

    def fold(self, n: ast.expr, fn: Callable[..., float], *args: float) -> float:
        """``fn(*args)`` for a constant subtree, rejected unless finite and at most MAX_LITERAL."""
        try:
            value, why = fn(*args), "not a finite number"
        except _FOLD_ERRORS as exc:
            value, why = math.nan, str(exc) or type(exc).__name__
        if not (type(value) is float and abs(value) <= MAX_LITERAL):
            self.fail(n.col_offset, "a constant with a finite real value",
                      f"{self.token(n.col_offset, n.end_col_offset)} ({why})", "fix the constant.")
        return value

    def call(self, n: ast.Call, depth: int) -> tuple[Node, float | None]:
        col, functions = n.col_offset, ", ".join(UNARY_FUNCTIONS)
        if not isinstance(n.func, ast.Name):
            self.walk(n.func, depth + 1)  # attribute access and the like are reported first
            self.fail(col, "a function name before '('", self.token(col, n.func.end_col_offset),
                      f"call one of {functions}.")
        f = n.func.id
        if f in _LIST_FUNCTIONS:
            instead = "a + b + c" if f == "sum" else "log(exp(a) + exp(b))"
            self.fail(col, f"a function ({functions})", f"{f!r}, which takes a list in ops", f"write {instead}.")
        if f in self.declared:
            self.fail(col, f"a function ({functions})", f"{f!r}, a declared name", f"write {f}*(...) for a product.")
        if f not in UNARY_FUNCTIONS:
            close = difflib.get_close_matches(f, UNARY_FUNCTIONS, n=1)
            todo = f"did you mean {close[0]}?" if close else "no other function may be called."
            self.fail(col, f"a function ({functions})", repr(_snippet(f, 0)), todo)
        option = CONSTANT_ARGUMENTS.get(f)
        one = f"{f}(z) with one positional argument" if option is None else \
            f"{f}(z) or {f}(z, {option}) with a constant {option} > 0"
        for a in n.args:
            if isinstance(a, ast.Starred):
                got = f"a starred argument {self.token(a.col_offset, a.end_col_offset)}"
                self.fail(a.col_offset, one, got, "pass one expression.")
        args = list(n.args)
        for kw in n.keywords:
            if option is None or kw.arg != option or len(args) != 1:
                self.fail(kw.col_offset, one, f"the keyword argument {(f'{kw.arg}=' if kw.arg else '**')!r}",
                          "remove the keyword." if option is None else f"pass {option} once, as a number.")
            args.append(kw.value)
        most = 1 if option is None else 2
        if not 1 <= len(args) <= most:
            at = args[most].col_offset if len(args) > most else n.func.end_col_offset
            takes = "one number" if option is None else f"z and {option}"
            self.fail(at, one, f"{len(args)} arguments", f"{f} takes {takes}.")
        arg, value = self.walk(args[0], depth + 1)
        nodes: list[Node] = [arg]
        consts: list[float] = []
        if len(args) == 2:
            # Note [Huber] in ops.py: delta shapes the function; it is a positive constant, not a variable.
            opt, c = self.walk(args[1], depth + 1)
            at = args[1].col_offset
            if c is None or not c > 0:
                got = self.token(at, args[1].end_col_offset) + ("" if c is None else f" (= {c:g})")
                self.fail(at, f"a constant {option} > 0", got, f"write a positive number such as {f}(z, 2.0).")
            nodes.append(opt)
            consts.append(c)
        value = None if value is None else self.fold(n, getattr(backend("float"), f), value, *consts)
        return Call(f, tuple(nodes), col), value


# ---------------------------------------------------------------- using the tree
def evaluate(node: Node, ops, env: Mapping[str, Any]) -> Any:
    """The value of ``node`` on backend ``ops`` (see :func:`gradcheck_lab.ops.backend`).

    ``env`` maps every name in the tree to a value of that backend. Constant
    subexpressions (plain Python numbers) are computed in Python, calls of a
    constant on the ``float`` backend, so every engine sees the same float64
    constants; integer literals stay ints (SymPy sees ``x**2``, not ``x**2.0``).

    >>> from gradcheck_lab.ops import backend
    >>> evaluate(parse("w*x + exp(0)", {"w", "x"}), backend("float"), {"w": 2.0, "x": 3.0})
    7.0
    """
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Name):
        try:
            return env[node.id]
        except KeyError:
            raise ExpressionError(f"Expected a value for {node.id!r} but got none (have {', '.join(env)}).") from None
    if isinstance(node, Neg):
        return -evaluate(node.operand, ops, env)
    if isinstance(node, Pos):
        return evaluate(node.operand, ops, env)
    if isinstance(node, BinOp):
        a, b = evaluate(node.left, ops, env), evaluate(node.right, ops, env)
        value = _ARITH[node.op](a, b)
        return _number(value) if _plain(a) and _plain(b) else value
    if isinstance(node, Call):
        x = evaluate(node.args[0], ops, env)
        consts = [float(evaluate(c, backend("float"), env)) for c in node.args[1:]]
        return getattr(backend("float") if _plain(x) else ops, node.func)(x, *consts)
    raise ExpressionError(f"Expected a node of gradcheck_lab.expr but got {node!r}.")


_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "**": 4}


def _prec(node: Node) -> int:
    if isinstance(node, BinOp):
        return _PREC[node.op]
    return 3 if isinstance(node, (Neg, Pos)) else 5


def unparse(node: Node) -> str:
    """Normalised text of ``node`` (minimal brackets); ``parse(unparse(t), ...) == t``.

    >>> unparse(parse("(w1 * (x**2))+w2*x  +b", {"w1", "w2", "b", "x"}))
    'w1*x**2 + w2*x + b'
    """

    def wrap(child: Node, brackets: bool) -> str:
        s = unparse(child)
        return f"({s})" if brackets else s

    if isinstance(node, Num):
        return repr(node.value)
    if isinstance(node, Name):
        return node.id
    if isinstance(node, Call):
        return f"{node.func}({', '.join(map(unparse, node.args))})"
    if isinstance(node, (Neg, Pos)):
        return ("-" if isinstance(node, Neg) else "+") + wrap(node.operand, _prec(node.operand) < 3)
    p = _PREC[node.op]
    if node.op == "**":  # right-associative; binds tighter than unary minus on its left
        left, right = _prec(node.left) <= 4, _prec(node.right) < 3
    else:
        left, right = _prec(node.left) < p, _prec(node.right) <= p
    sep = f" {node.op} " if p == 1 else node.op
    return wrap(node.left, left) + sep + wrap(node.right, right)


def names_used(node: Node) -> dict[str, int | None]:
    """Each name in ``node`` with the column of its first use."""
    out: dict[str, int | None] = {}
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Name):
            first = out.get(n.id, n.pos)
            out[n.id] = n.pos if first is None or n.pos is None else min(first, n.pos)
        elif isinstance(n, (Neg, Pos)):
            stack.append(n.operand)
        elif isinstance(n, BinOp):
            stack += [n.left, n.right]
        elif isinstance(n, Call):
            stack += list(n.args)
    return out


def split_names(names: object, what: str) -> list[Any]:
    """``"a, b"`` or a list (or mapping) of names as a list; anything else is refused."""
    if isinstance(names, str):
        return [s.strip() for s in names.split(",")]
    if isinstance(names, (Mapping, Sequence)):
        return list(names)
    raise ExpressionError(f"Expected {what} as a comma string or a list of names but got {names!r}.")
