"""Symbolic engine: SymPy derives the closed-form partial derivatives.

The loss expression comes from the model's own function run on the SymPy
backend. The partial derivatives are SymPy's chain rule applied in reverse
over the loss's expression graph (Note [Reverse-mode derivation]): every
node's local derivative is SymPy's own (``fdiff`` of a function, the power
and product rules), and the adjoints of shared subexpressions are summed
once, so d loss / d W1[j] of an mlp touches only unit j. The result is one
straight-line program, :func:`derivative_program`, which every compiled
evaluator reads (NumPy here through ``lambdify``, mpmath in the referee);
:func:`derivatives` are its outputs with every name substituted back: the
exact closed forms, equal to ``sympy.diff``'s (tests/test_symbolic.py).
``lambdify`` generates Python source from SymPy's expression tree and runs
``exec`` on it: the input is our own derived expression, never a user string
(user expressions reach SymPy only as trees built by :mod:`gradcheck_lab.expr`).

Note [Reverse-mode derivation]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
``sympy.diff(loss, w)`` walks the whole loss for every parameter: for an
mlp of width H the loss holds an H-term sum, so the P = 3H + 1 partials cost
O(H^2) (9 s at H = 256, and ``sympy.cse`` over the 769 results, and
printing them, as much again). Reverse accumulation walks the graph once:
each distinct subexpression (SymPy expressions are values, so equal
subtrees are one node) gets a name ``_cK`` in a forward program; in reverse
topological order each node's adjoint ``dloss/dnode`` is the sum over its
users of ``adjoint(user) * dlocal``; a parameter's adjoint is its partial
derivative. Names used once are substituted back and unused ones dropped,
so the program is O(H) assignments (mlp H = 256: 513, one ``tanh`` and one
adjoint per unit). Measured on the 2-core CI machine (benchmarks/derive.py,
docs/performance.md): mlp H = 256 derives in 0.5 s where ``sympy.diff``
took 9 s, and no ``sympy.cse`` is needed: the program is already shared.
Conditions of a ``Piecewise`` (relu) are not differentiated, as in
``sympy.diff``: the derivative is taken branch by branch.

Note [Named conditions]
~~~~~~~~~~~~~~~~~~~~~~~
A ``Piecewise``'s conditions are not its children in the graph, so they
were kept as whole subtrees: a ``where(d > 0, a, b)`` on a traced graph, or
a relu of a relu, printed its condition's entire expansion at every use (a
transformer layer's 2-head attention printed for 5 minutes in ``lambdify``).
Each condition now reads the names of the subtrees already assigned
(``earlier`` in the forward program, every name in the backward one). And
each ``Piecewise`` built or rebuilt on the way is left unevaluated
(:func:`unevaluated_piecewise`): SymPy otherwise *folds* a ``Piecewise``
nested in a condition into every combination of the inner branches, and
walks both branches to collapse equal conditions, which is exponential in
the nesting. Only a condition that became a truth value is evaluated.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from ..model import Batch, Model
from ..ops import LAMBDIFY_NUMPY  # erf: Note [erf in NumPy]
from . import Gradients

__all__ = [
    "gradients",
    "derivatives",
    "derivative_program",
    "shared_form",
    "simplified",
    "tidy",
    "hessian",
    "compiled",
]

#: Largest derivative (in SymPy operations) that ``simplified`` hands to ``sympy.simplify``.
SIMPLIFY_MAX_OPS = 40
#: ... and in at most this many symbols.
SIMPLIFY_MAX_SYMBOLS = 5
#: Largest derivative (tree nodes) that ``simplified`` tidies with ``factor_terms``; beyond,
#: the reverse-mode form (already a product of factors) is returned as it is.
#: ``factor_terms`` took 69 ms on one mlp H = 32 partial (~330 operations), more on larger ones.
FACTOR_MAX_NODES = 400
#: A subexpression of more tree nodes than this that several partials use gets a name
#: in :func:`shared_form` (the mlp's residual from H = 5 on; nothing in the lesson's models).
SHARE_MIN_NODES = 40
#: Derivations kept in memory, keyed by the loss expression and the parameters.
CACHE_SIZE = 32

_DERIVATIONS: OrderedDict = OrderedDict()


def _graph(loss, params):
    """The distinct nodes of ``loss`` in post-order, their children, and which depend on ``params``."""
    import sympy as sp

    # SymPy ships no types (pyproject [tool.mypy]): nodes are Any.
    children: dict[Any, tuple[Any, ...]] = {}
    dep: dict[Any, bool] = {}
    order: list[Any] = []
    stack = [(loss, False)]
    while stack:
        n, done = stack.pop()
        if done:
            if n not in dep:
                dep[n] = n in params or any(dep[c] for c in children[n])
                order.append(n)
            continue
        if n in children:
            continue
        kids: tuple[Any, ...]
        if n.is_Atom:
            kids = ()
        elif isinstance(n, sp.Piecewise):
            # Only the branches' expressions are differentiated, not the conditions (as sympy.diff).
            kids = tuple(dict.fromkeys(e for e, _ in n.args))
        else:
            kids = tuple(dict.fromkeys(a for a in n.args if isinstance(a, sp.Expr)))
        children[n] = kids
        stack.append((n, True))
        stack.extend((c, False) for c in reversed(kids) if c not in children)
    return order, children, dep


def _locals(n, name, dep):
    """``(child, d n / d child)`` for each argument of ``n`` that depends on a parameter.

    ``name`` maps a node to its name in the program (an atom to itself). The
    local derivatives are the rules ``sympy.diff`` applies: 1 for a sum, the
    other factors for a product, the power rule, ``fdiff`` for a function
    (``1 - tanh(z)**2``, ``exp(z)``, ``sign(z)``), branch by branch for a
    ``Piecewise``; anything else is differentiated by SymPy in a dummy.
    """
    import sympy as sp

    if n.is_Add:
        return [(c, sp.S.One) for c in n.args if dep[c]]
    args = [name[a] if isinstance(a, sp.Expr) else a for a in n.args]
    if n.is_Mul:
        return [
            (c, sp.Mul(*args[:i], *args[i + 1 :])) for i, c in enumerate(n.args) if dep[c]
        ]
    if n.is_Pow:
        (b, e), (fb, fe) = n.args, args
        out = [(b, fe * fb ** (fe - 1))] if dep[b] else []
        return out + ([(e, name[n] * sp.log(fb))] if dep[e] else [])
    if isinstance(n, sp.Piecewise):
        # Every named subtree of the conditions too (Note [Named conditions]): all are assigned by now.
        conds = [_subs(c, name) for _, c in n.args]
        return [
            (e, unevaluated_piecewise([(sp.S.One if j == k else sp.S.Zero, c) for j, c in enumerate(conds)]))
            for k, (e, _) in enumerate(n.args)
            if dep[e]
        ]
    form = n.xreplace({c: name[c] for c in n.args if isinstance(c, sp.Expr) and not c.is_Atom})
    out = []
    for i, c in enumerate(n.args):
        if not (isinstance(c, sp.Expr) and dep[c]):
            continue
        local = None
        if isinstance(n, sp.Function):
            try:
                local = form.fdiff(i + 1)
            except Exception:  # noqa: BLE001 -- ArgumentIndexError and kin: the generic rule below
                local = None
        if local is None or local.has(sp.Derivative, sp.Subs):
            d = sp.Dummy("d")
            local = n.func(*args[:i], d, *args[i + 1 :]).diff(d).xreplace({d: args[i]})
        out.append((c, local.xreplace({form: name[n]})))
    return out


def _subs(e, mapping: dict):
    """``e.xreplace(mapping)``, except that ``2*(a + b)`` is kept as a product.

    SymPy distributes a number over a sum (``2*(a + b)`` becomes ``2*a + 2*b``):
    for the mlp's adjoint ``2*residual`` that is H multiplications instead of one
    and the closed forms would read ``x*(2*a + 2*b)`` instead of ``sympy.diff``'s
    ``2*x*(a + b)``. Kept unevaluated, the product is flattened into its users.
    """
    if e in mapping:
        return mapping[e]
    if e.is_Atom:
        return e
    import sympy as sp

    args = [_subs(a, mapping) for a in e.args]
    if all(a is b for a, b in zip(args, e.args)):
        return e
    if e.is_Mul and len(args) == 2 and args[0].is_Number and args[1].is_Add:
        return sp.Mul(*args, evaluate=False)
    if isinstance(e, sp.Function) and not isinstance(e, sp.Piecewise):
        # tanh(a long sum) would ask SymPy's assumptions about its argument's sign: seconds on big graphs.
        return e.func(*args, evaluate=False)
    if isinstance(e, (sp.Piecewise, sp.Tuple, sp.core.relational.Relational)):  # a pair is a Tuple
        return _rebuild_branch(e, args)
    return e.func(*args)


def _rebuild_branch(e, args):
    """A ``Piecewise``, one of its pairs or a condition with new arguments, evaluated only when decided.

    Evaluating them walks the whole (by now inlined) subtree: ``Piecewise``
    collapses equal conditions and ``z < 0`` asks the assumptions about the
    sign of ``z`` (Note [Named conditions]). Only a condition that became a
    number (``3 < 0``) or a truth value is worth evaluating: it drops a branch.
    """
    import sympy as sp
    from sympy.functions.elementary.piecewise import ExprCondPair
    from sympy.logic.boolalg import BooleanAtom

    if isinstance(e, sp.core.relational.Relational):
        if all(a.is_Number for a in args):
            return e.func(*args)
        return e.func(*args, evaluate=False)
    if isinstance(e, ExprCondPair):
        return e.func(*args) if isinstance(args[1], BooleanAtom) else sp.Tuple.__new__(ExprCondPair, *args)
    if not isinstance(e, sp.Piecewise):  # another Tuple
        return e.func(*args)
    decided = any(isinstance(new.cond, BooleanAtom) and not isinstance(old.cond, BooleanAtom)
                  for new, old in zip(args, e.args))
    return e.func(*args) if decided else unevaluated_piecewise([p.args for p in args])


def unevaluated_piecewise(pairs):
    """``Piecewise(*pairs)`` exactly as given: no folding, no collapsing.

    ``Piecewise(..., evaluate=False)`` still rebuilds every pair, and a pair
    whose condition holds a ``Piecewise`` (``relu(relu(a) - b) `` in the
    condition ``relu(a) - b < 0``) is *folded* into every combination of the
    inner branches: exponential in the nesting. The pairs and the Piecewise
    are built as SymPy builds them once checked (``Tuple.__new__``,
    ``Basic.__new__``): the conditions are relations of real expressions and
    the last one is ``True``.
    """
    import sympy as sp
    from sympy.functions.elementary.piecewise import ExprCondPair

    return sp.Basic.__new__(sp.Piecewise, *(sp.Tuple.__new__(ExprCondPair, e, c) for e, c in pairs))


def substitute(e, mapping: dict):
    """``e.xreplace(mapping)`` without re-evaluating what it rebuilds (Note [Named conditions])."""
    return _subs(e, mapping)


def _uses(exprs) -> dict:
    """How often each symbol occurs in ``exprs`` (with multiplicity)."""
    count: dict = {}
    stack = list(exprs)
    while stack:
        e = stack.pop()
        if e.is_Symbol:
            count[e] = count.get(e, 0) + 1
        elif not e.is_Atom:
            stack.extend(e.args)
    return count


class _Derivation:
    """One reverse-mode derivation (Note [Reverse-mode derivation]).

    ``program`` is ``(assignments, outputs)``; ``node_of`` maps each forward
    name to the loss's own subtree it stands for; ``size`` its tree size.
    """

    def __init__(self, loss, th):
        import sympy as sp

        th = list(th)
        params = set(th)
        loss = sp.sympify(loss, strict=True)  # a model may return a plain number; never a string
        nodes, children, dep = _graph(loss, params)
        counter = iter(range(10**12))
        fresh = lambda: sp.Symbol(f"_c{next(counter)}")  # noqa: E731 -- model names never start with _
        name: dict[Any, Any] = {}
        earlier: dict[Any, Any] = {}  # the non-atom nodes named so far
        size: dict[Any, int] = {}
        forward: list[tuple[Any, Any]] = []
        node_of: dict[Any, Any] = {}
        for n in nodes:
            size[n] = 1 + sum(size[c] for c in children[n])
            if n.is_Atom:
                name[n] = n
                continue
            s = fresh()
            if isinstance(n, sp.Piecewise):  # Note [Named conditions]: names assigned before this one
                forward.append((s, _subs(n, earlier)))
            else:
                forward.append((s, n.xreplace({c: name[c] for c in children[n] if not c.is_Atom})))
            name[n], node_of[s], earlier[n] = s, n, s
        contrib, backward, grads = {loss: [sp.S.One]}, [], {}
        for n in reversed(nodes):
            if not dep[n] or n not in contrib:
                continue
            total = sp.Add(*contrib.pop(n))
            if n in params:
                grads[n] = total
                continue
            a = total
            if not total.is_Atom:
                a = fresh()
                backward.append((a, total))
            for c, local in _locals(n, name, dep):
                if local != 0:
                    contrib.setdefault(c, []).append(a if local == 1 else sp.Mul(a, local))
        outputs = [grads.get(t, sp.S.Zero) for t in th]
        self.raw = (forward + backward, outputs)
        self.program = _tidy(*self.raw)
        self.node_of = node_of
        self.size = {s: size[n] for s, n in node_of.items()}
        self.th = th
        self.compiled: dict = {}
        self._closed = None

    def closed_forms(self) -> list:
        """The outputs with every name substituted back (cheap: shared objects, not copies)."""
        if self._closed is None:
            self._closed, _ = _substitute(self.program, self.node_of)
        return self._closed


def _substitute(program, node_of, keep=frozenset()):
    """``program``'s outputs with every name but ``keep`` substituted; and ``keep``'s definitions."""
    import sympy as sp

    full: dict[Any, Any] = {}
    defs: dict[Any, Any] = {}
    for s, e in program[0]:
        if s in keep:
            defs[s] = _subs(e, full)
        elif s in node_of and not keep:
            full[s] = node_of[s]  # the loss's own subtree, exactly
        else:
            full[s] = _subs(e, full)
    out = []
    for o in program[1]:
        v = _subs(o, full)
        out.append(sp.Mul(*v.args) if v.is_Mul else v)  # a bare 2*(a + b) now distributes, as in sympy.diff
    return out, defs


def _tidy(assignments: list, outputs: list, protect=frozenset()) -> tuple[list, list]:
    """Drop unused assignments and substitute those used once (and not in ``protect``) into their user."""
    live, kept = _uses(outputs), []
    for s, e in reversed(assignments):
        if s in live:
            kept.append((s, e))
            for k, c in _uses([e]).items():
                live[k] = live.get(k, 0) + c
    subst: dict[Any, Any] = {}
    program: list[tuple[Any, Any]] = []
    for s, e in reversed(kept):
        e = _subs(e, subst) if subst else e
        if (live[s] == 1 and s not in protect) or e.is_Atom:
            subst[s] = e
        else:
            program.append((s, e))
    return program, [_subs(o, subst) for o in outputs]


def _derivation(model: Model) -> _Derivation:
    """The model's derivation, shared by every model with the same loss and parameters."""
    if "derivation" not in model._cache:
        loss = model.loss_expr()
        th, _ = model.symbols()
        key = (loss, tuple(th))
        d = _DERIVATIONS.pop(key, None) or _Derivation(loss, th)
        _DERIVATIONS[key] = d
        while len(_DERIVATIONS) > CACHE_SIZE:
            _DERIVATIONS.popitem(last=False)
        model._cache["derivation"] = d
    return model._cache["derivation"]


def derivatives(model: Model) -> list:
    """d loss / d theta_i for every flat parameter, unsimplified, cached.

    Exactly the partial derivatives (equal to ``sympy.diff(loss, theta_i)``);
    shared subexpressions are shared objects, so building them costs O(size of the
    loss) (Note [Reverse-mode derivation]).
    """
    return _derivation(model).closed_forms()


def derivative_program(model: Model) -> tuple[list, list]:
    """The partial derivatives as a straight-line program, cached.

    ``(assignments, outputs)``: ``assignments`` is a list of ``(symbol,
    expression)`` evaluated in order, ``outputs`` one expression per flat
    parameter in terms of the parameters, the data and those symbols
    (``sympy.cse``'s form). Every compiled evaluator (NumPy, the referee)
    reads this one form, so shared subexpressions are computed once. It is
    the reverse-mode derivation itself (Note [Reverse-mode derivation]): the
    forward values, then the adjoints.
    """
    return _derivation(model).program


def shared_form(model: Model, min_nodes: int = SHARE_MIN_NODES) -> tuple[list, list]:
    """The partials written with names for their large shared subexpressions.

    ``(shared, partials)``: ``shared`` lists ``(symbol, expression)`` for each
    subexpression of more than ``min_nodes`` tree nodes that several partials
    use (in order: a definition uses only earlier names), ``partials`` one
    expression per flat parameter in those names. Substituting the names back
    gives :func:`derivatives`. Both empty of names when nothing is that large.
    The names are ``s1, s2, ...`` (``s_1, ...`` if the model has an ``s1``).
    """
    import sympy as sp

    key = ("shared_form", min_nodes)
    if key in model._cache:
        return model._cache[key]
    d = _derivation(model)
    big = frozenset(s for s, n in d.node_of.items() if d.size[s] > min_nodes)
    program = _tidy(*d.raw, protect=big) if big else d.program
    keep = frozenset(s for s, _ in program[0] if s in big)
    partials, defs = _substitute(program, d.node_of, keep)
    # A name that only one expression uses is written out there instead.
    uses = _uses([*partials, *defs.values()])
    for s in [s for s in reversed(list(defs)) if uses.get(s, 0) <= 1]:
        value = defs.pop(s)
        partials = [p.xreplace({s: value}) for p in partials]
        defs = {k: v.xreplace({s: value}) for k, v in defs.items()}
    if not defs:
        model._cache[key] = ([], list(d.closed_forms()))
        return model._cache[key]
    th, da = model.symbols()
    taken = {str(s) for s in (*th, *da)}
    base = next(b for b in ("s", "s_", "u", "u_", "shared_") if not any(t.startswith(b) for t in taken))
    rename = {s: sp.Symbol(f"{base}{k + 1}", real=True) for k, s in enumerate(defs)}
    shared = [(rename[s], v.xreplace(rename)) for s, v in defs.items()]
    model._cache[key] = (shared, [p.xreplace(rename) for p in partials])
    return model._cache[key]


def _nodes_at_most(e, limit: int) -> bool:
    """Whether ``e`` has at most ``limit`` tree nodes (stops counting beyond)."""
    stack, n = [e], 0
    while stack:
        n += 1
        if n > limit:
            return False
        stack.extend(stack.pop().args)
    return True


def tidy(e, simplify: bool = True, max_ops: int = SIMPLIFY_MAX_OPS):
    """One expression tidied for reading, by the engine's policy (see :func:`simplified`)."""
    import sympy as sp

    if not _nodes_at_most(e, FACTOR_MAX_NODES):
        return e
    small = simplify and sp.count_ops(e) <= max_ops and len(e.free_symbols) <= SIMPLIFY_MAX_SYMBOLS
    return sp.simplify(e) if small else sp.factor_terms(e)


def simplified(model: Model, indices=None, max_ops: int = SIMPLIFY_MAX_OPS) -> list:
    """The partial derivatives tidied for reading.

    ``sympy.simplify`` runs only on derivatives of at most ``max_ops``
    operations in at most ``SIMPLIFY_MAX_SYMBOLS`` symbols: on larger ones
    (the mlp's, softmax's) its polynomial GCDs and factorisations ran for
    minutes. Those up to ``FACTOR_MAX_NODES`` tree nodes get ``factor_terms``,
    which is structural and fast; larger ones are returned as derived.
    ``indices`` limits the work to some parameters.
    """
    cache = model._cache.setdefault("simplified", {})
    grads = derivatives(model)
    out = []
    for i in range(len(grads)) if indices is None else indices:
        if i not in cache:
            cache[i] = tidy(grads[i], max_ops=max_ops)
        out.append(cache[i])
    return out


def hessian(model: Model):
    """The matrix of second derivatives of the loss (SymPy Matrix), cached."""
    if "hessian" not in model._cache:
        import sympy as sp

        th, _ = model.symbols()
        grads = derivatives(model)
        model._cache["hessian"] = sp.Matrix([[sp.diff(g, s) for s in th] for g in grads])
    return model._cache["hessian"]


def compiled(model: Model):
    """The NumPy function ``(theta..., data...) -> [grad_i]``, cached.

    ``lambdify`` prints :func:`derivative_program` (its ``cse`` argument
    returns the program), so shared subexpressions are computed once.
    """
    if "grad_fn" not in model._cache:
        import sympy as sp

        d = _derivation(model)
        th, da = model.symbols()
        key = ("numpy", tuple(th), tuple(da))
        if key not in d.compiled:
            from sympy.printing.numpy import NumPyPrinter

            assignments, outputs = d.program
            # lambdify's own printer settings, plus order="none": the terms of a sum are
            # printed as stored instead of sorted (sorting was 40% of the compile at H = 256).
            printer = NumPyPrinter(
                {"fully_qualified_modules": False, "inline": True, "allow_unknown_functions": True, "order": "none"}
            )
            d.compiled[key] = sp.lambdify(
                [*th, *da], outputs, modules=[LAMBDIFY_NUMPY, "numpy"], printer=printer, cse=lambda _: (assignments, outputs)
            )
        model._cache["grad_fn"] = d.compiled[key]
    return model._cache["grad_fn"]


def evaluate(fn, model: Model, batch: Batch, dtype: str = "float64") -> np.ndarray:
    """Evaluate a compiled list-of-expressions function on a batch, shape (N, len)."""
    dt = np.dtype(dtype)
    cols = [batch.theta[:, i].astype(dt) for i in range(batch.theta.shape[1])]
    cols += [batch.data[:, j].astype(dt) for j in range(batch.data.shape[1])]
    n = len(batch)
    with np.errstate(all="ignore"):
        out = fn(*cols)
    result = np.empty((n, len(out)))
    for k, o in enumerate(out):
        result[:, k] = o  # a constant derivative broadcasts; the assignment casts to float64
    return result


def gradients(model: Model, batch: Batch, *, dtype: str = "float64", device: str = "cpu") -> Gradients:
    """The closed-form gradient evaluated in ``dtype`` on every point of ``batch``."""
    return Gradients("symbolic", evaluate(compiled(model), model, batch, dtype), dtype=dtype)
