"""A tracing backend of ``ops``: the model's own function, recorded node by node.

The tracer hands the model's loss function (the same ``(ops, p, v)`` function
every engine reads) :class:`Node` objects instead of numbers. Each operation
computes its forward value as a Python float and records its *local
derivatives* right beside the forward rule, as micrograd does, so a reader
checks each rule by eye. :func:`trace` then runs the reverse pass: every
node's *upstream gradient* ``dloss/dnode`` is the sum, over the nodes that
consume it, of their upstream gradient times their local derivative.

Constants never become nodes: ``2 * z`` is one node whose operation reads
``2 * ·``, so the graph shows only what depends on a parameter or an input.

The backend is registered as ``"trace"`` in :mod:`gradcheck_lab.ops`.

>>> from gradcheck_lab import get_model
>>> t = trace(get_model("affine"), {"w": 1.0, "b": 1.0}, {"x": 1.0, "y": 2.0})
>>> [n.name for n in t.nodes]
['w', 'b', 'x', 'y', 'n1', 'n2', 'n3', 'loss']
>>> t.gradients
{'w': 0.0, 'b': 0.0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidValueError
from ..ops import FUNCTIONS, HUBER_DELTA, Ops, huber_float, register_backend

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["Node", "Trace", "trace", "trace_row", "trace_ops"]


def _fmt_const(c: float) -> str:
    c = float(c)
    return str(int(c)) if c.is_integer() and abs(c) < 1e15 else repr(c)


class Node:
    """One value of the computation graph.

    ``op`` is the operation as read in a formula, with ``·`` standing for
    each input in turn (``· * ·``, ``· ** 2``, ``tanh(·)``); leaves have
    ``op`` ``"param"`` or ``"input"``. ``local`` holds d(self)/d(input) for
    each entry of ``inputs``; ``grad`` is filled by the reverse pass.
    """

    __slots__ = ("value", "inputs", "local", "op", "name", "kind", "grad", "note", "_id")
    _counter = 0

    def __init__(self, value, inputs=(), local=(), op="", name="", kind="op", note=""):
        value = float(value)
        if math.isnan(value):
            raise InvalidValueError(
                f"Expected a finite value at operation {op} but got NaN (inputs "
                f"{[_fmt_value(i) for i in inputs]}); the point is outside the model's domain."
            )
        self.value = value
        self.inputs: tuple[Node, ...] = tuple(inputs)
        self.local: tuple[float, ...] = tuple(float(d) for d in local)
        self.op = op
        self.name = name
        self.kind = kind
        self.grad = 0.0
        self.note = note
        Node._counter += 1
        self._id = Node._counter

    def __repr__(self) -> str:
        return f"Node({self.name or self.op}={self.value!r})"

    # ------------------------------------------------------------ arithmetic
    # Each rule: forward value, then the local derivative for every input.
    def __add__(self, other):
        if not isinstance(other, Node):
            c = float(other)
            return Node(self.value + c, (self,), (1.0,), f"· + {_fmt_const(c)}")
        return Node(self.value + other.value, (self, other), (1.0, 1.0), "· + ·")

    def __radd__(self, other):
        c = float(other)
        return Node(c + self.value, (self,), (1.0,), f"{_fmt_const(c)} + ·")

    def __sub__(self, other):
        if not isinstance(other, Node):
            c = float(other)
            return Node(self.value - c, (self,), (1.0,), f"· - {_fmt_const(c)}")
        return Node(self.value - other.value, (self, other), (1.0, -1.0), "· - ·")

    def __rsub__(self, other):
        c = float(other)
        return Node(c - self.value, (self,), (-1.0,), f"{_fmt_const(c)} - ·")

    def __neg__(self):
        return Node(-self.value, (self,), (-1.0,), "-·")

    def __pos__(self):
        return self

    def __mul__(self, other):
        if not isinstance(other, Node):
            c = float(other)
            return Node(self.value * c, (self,), (c,), f"· * {_fmt_const(c)}")
        # d(a*b)/da = b, d(a*b)/db = a
        return Node(self.value * other.value, (self, other), (other.value, self.value), "· * ·")

    def __rmul__(self, other):
        c = float(other)
        return Node(c * self.value, (self,), (c,), f"{_fmt_const(c)} * ·")

    def __truediv__(self, other):
        if not isinstance(other, Node):
            c = float(other)
            _nonzero(c, f"· / {_fmt_const(c)}")
            return Node(self.value / c, (self,), (1.0 / c,), f"· / {_fmt_const(c)}")
        _nonzero(other.value, "· / ·")
        # d(a/b)/da = 1/b, d(a/b)/db = -a/b**2
        return Node(
            self.value / other.value,
            (self, other),
            (1.0 / other.value, -self.value / other.value**2),
            "· / ·",
        )

    def __rtruediv__(self, other):
        c = float(other)
        _nonzero(self.value, f"{_fmt_const(c)} / ·")
        return Node(c / self.value, (self,), (-c / self.value**2,), f"{_fmt_const(c)} / ·")

    def __pow__(self, other):
        if not isinstance(other, Node):
            c = float(other)
            a = self.value
            value = _real_pow(a, c, f"· ** {_fmt_const(c)}")
            # d(a**c)/da = c * a**(c - 1)
            local = 0.0 if c == 0 else c * _real_pow(a, c - 1, f"· ** {_fmt_const(c)}") if c != 1 else 1.0
            return Node(value, (self,), (local,), f"· ** {_fmt_const(c)}")
        a, b = self.value, other.value
        if a <= 0:
            raise InvalidValueError(
                f"Expected a positive base for · ** · with a variable exponent but got base {a!r}."
            )
        value = a**b
        # d(a**b)/da = b * a**(b - 1), d(a**b)/db = a**b * log(a)
        return Node(value, (self, other), (b * a ** (b - 1), value * math.log(a)), "· ** ·")

    def __rpow__(self, other):
        c = float(other)
        if c <= 0:
            raise InvalidValueError(f"Expected a positive base for {_fmt_const(c)} ** · but got {c!r}.")
        value = c**self.value
        # d(c**b)/db = c**b * log(c)
        return Node(value, (self,), (value * math.log(c),), f"{_fmt_const(c)} ** ·")


def _fmt_value(v) -> str:
    return repr(v.value) if isinstance(v, Node) else repr(v)


def _nonzero(x: float, op: str) -> None:
    if x == 0:
        raise InvalidValueError(f"Expected a non-zero divisor at operation {op} but got 0.0.")


def _real_pow(a: float, c: float, op: str) -> float:
    if a == 0 and c < 0:
        raise InvalidValueError(f"Expected a non-zero base at operation {op} but got 0.0.")
    if a < 0 and not float(c).is_integer():
        raise InvalidValueError(f"Expected a non-negative base at operation {op} but got {a!r}.")
    return a**c


# ---------------------------------------------------------------- functions
# Each unary function: forward value and local derivative, side by side.
def _unary(name: str, forward, derivative, domain=None, note_at_kink: str = ""):
    def fn(z):
        if not isinstance(z, Node):
            return _FLOAT[name](float(z))
        a = z.value
        if domain is not None and not domain(a):
            raise InvalidValueError(f"Expected an argument of {name} in its domain but got {a!r}.")
        note = note_at_kink if (note_at_kink and a == 0) else ""
        value = forward(a)
        return Node(value, (z,), (derivative(a, value),), f"{name}(·)", note=note)

    fn.__name__ = name
    return fn


def _sigmoid(a: float) -> float:
    if a >= 0:
        return 1.0 / (1.0 + math.exp(-a))
    e = math.exp(a)
    return e / (1.0 + e)


def _softplus(a: float) -> float:
    return max(a, 0.0) + math.log1p(math.exp(-abs(a)))


_KINK = "derivative undefined at 0; the rule uses 0 there, as torch does"
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

_UNARY = {
    # name: (forward, d/dz given (z, forward value), domain)
    "exp": (math.exp, lambda a, v: v, None),
    "log": (math.log, lambda a, v: 1.0 / a, lambda a: a > 0),
    "sqrt": (math.sqrt, lambda a, v: 0.5 / v, lambda a: a > 0),
    "sin": (math.sin, lambda a, v: math.cos(a), None),
    "cos": (math.cos, lambda a, v: -math.sin(a), None),
    "atan": (math.atan, lambda a, v: 1.0 / (1.0 + a * a), None),
    "tanh": (math.tanh, lambda a, v: 1.0 - v * v, None),
    "sinh": (math.sinh, lambda a, v: math.cosh(a), None),
    "cosh": (math.cosh, lambda a, v: math.sinh(a), None),
    # 1/sqrt(1 + a**2), written with hypot so that a**2 cannot overflow.
    "asinh": (math.asinh, lambda a, v: 1.0 / math.hypot(1.0, a), None),
    "log1p": (math.log1p, lambda a, v: 1.0 / (1.0 + a), lambda a: a > -1),
    "expm1": (math.expm1, lambda a, v: math.exp(a), None),
    "erf": (math.erf, lambda a, v: _TWO_OVER_SQRT_PI * math.exp(-a * a), None),
    "sigmoid": (_sigmoid, lambda a, v: v * (1.0 - v), None),
    "softplus": (_softplus, lambda a, v: _sigmoid(a), None),
    "relu": (lambda a: max(a, 0.0), lambda a, v: 1.0 if a > 0 else 0.0, None),
    "abs": (abs, lambda a, v: (a > 0) - (a < 0), None),
    "square": (lambda a: a * a, lambda a, v: 2.0 * a, None),
}
_FLOAT = {name: spec[0] for name, spec in _UNARY.items()}


def _sum(zs: Sequence[Any]):
    nodes = [z for z in zs if isinstance(z, Node)]
    const = math.fsum(float(z) for z in zs if not isinstance(z, Node))
    if not nodes:
        return const
    value = math.fsum([const, *(n.value for n in nodes)])
    op = "sum(" + ", ".join(["·"] * len(nodes) + ([_fmt_const(const)] if const else [])) + ")"
    # d(sum)/dz_k = 1
    return Node(value, nodes, [1.0] * len(nodes), op)


def _logsumexp(zs: Sequence[Any]):
    vals = [z.value if isinstance(z, Node) else float(z) for z in zs]
    m = max(vals)
    s = math.fsum(math.exp(v - m) for v in vals)
    value = m + math.log(s)
    nodes = [z for z in zs if isinstance(z, Node)]
    if not nodes:
        return value
    op = "logsumexp(" + ", ".join("·" if isinstance(z, Node) else _fmt_const(z) for z in zs) + ")"
    # d(logsumexp)/dz_k = softmax(z)_k
    return Node(value, nodes, [math.exp(n.value - value) for n in nodes], op)


def _huber(z: Any, delta: float = HUBER_DELTA) -> Any:
    """``huber(z, delta)`` (Note [Huber] in ops.py): forward and its continuous slope."""
    delta = float(delta)
    if not isinstance(z, Node):
        return huber_float(float(z), delta)
    a = z.value
    op = "huber(·)" if delta == HUBER_DELTA else f"huber(·, {_fmt_const(delta)})"
    # d/dz huber = z inside [-delta, delta], delta*sign(z) outside: clip(z, -delta, delta).
    return Node(huber_float(a, delta), (z,), (min(max(a, -delta), delta),), op)


def trace_ops() -> Ops:
    """The ``ops`` namespace of the tracer (every function in ``ops.FUNCTIONS``)."""
    fns = {
        name: _unary(name, fwd, der, dom, _KINK if name in ("relu", "abs") else "")
        for name, (fwd, der, dom) in _UNARY.items()
    }
    ops = Ops(name="trace", sum=_sum, logsumexp=_logsumexp, huber=_huber, **fns)
    assert set(FUNCTIONS) <= set(vars(ops))
    return ops


register_backend("trace", trace_ops)


# ---------------------------------------------------------------- the trace
@dataclass
class Trace:
    """A traced loss: nodes in topological order and the reverse pass done.

    ``gradients`` maps each parameter component label to dloss/dparam
    (0.0 for a parameter the loss does not use); ``loss`` is the forward value.
    """

    model_name: str
    nodes: list[Node]
    loss: float
    gradients: dict[str, float]
    params: dict[str, float]
    data: dict[str, float]
    param_labels: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per node: name, kind, operation, inputs, value, local, upstream, gradients."""
        out = []
        for n in self.nodes:
            ins = [i.name for i in n.inputs]
            out.append(
                {
                    "name": n.name,
                    "kind": n.kind,
                    "op": n.op,
                    "expression": expression(n),
                    "inputs": ins,
                    "value": n.value,
                    "local": dict(zip(ins, n.local)) if len(set(ins)) == len(ins) else list(n.local),
                    "local_list": list(n.local),
                    "upstream": n.grad,
                    "to_inputs": [n.grad * d for d in n.local],
                    "note": n.note,
                }
            )
        return out


def expression(n: Node) -> str:
    """``n1 = w * x`` style: the node's operation with its inputs' names filled in."""
    if n.kind != "op":
        return n.name
    parts = n.op.split("·")
    text = parts[0]
    for name, rest in zip([i.name for i in n.inputs], parts[1:]):
        text += name + rest
    return text


def _topological(root: Node) -> list[Node]:
    order: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:  # iterative DFS (deep graphs must not hit the recursion limit)
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for child in reversed(node.inputs):
            if id(child) not in seen:
                stack.append((child, False))
    return order


def trace_row(model: Model, theta_row: Sequence[float] | np.ndarray, data_row: Sequence[float] | np.ndarray) -> Trace:
    """Trace the loss at one flat point (the layout of :class:`~gradcheck_lab.model.Batch`)."""
    from ..ops import backend

    labels = model.param_labels
    dlabels = [lab for v in model.data_vars for lab in v.labels()]
    leaves: dict[tuple[str, int], Node] = {}

    def theta_col(i: int) -> Node:
        if ("p", i) not in leaves:
            leaves[("p", i)] = Node(float(theta_row[i]), op="param", name=labels[i], kind="param")
        return leaves[("p", i)]

    def data_col(j: int) -> Node:
        if ("d", j) not in leaves:
            leaves[("d", j)] = Node(float(data_row[j]), op="input", name=dlabels[j], kind="input")
        return leaves[("d", j)]

    try:
        out = model.loss(backend("trace"), theta_col, data_col)
    except (OverflowError, ZeroDivisionError, ValueError) as exc:
        if isinstance(exc, InvalidValueError):
            raise
        raise InvalidValueError(f"Expected the loss to be computable at this point but got {exc}.") from None
    if not isinstance(out, Node):  # a loss that depends on nothing
        out = Node(float(out), op=_fmt_const(out), name="loss")
    nodes = _topological(out)
    # Leaves first (parameters, then inputs, in the model's order), then operations.
    leaf_nodes = sorted((n for n in nodes if n.kind != "op"), key=lambda n: (n.kind != "param", n._id))
    ops_nodes = [n for n in nodes if n.kind == "op"]
    for k, n in enumerate(ops_nodes, 1):
        n.name = f"n{k}"
    out.name = "loss"
    order = leaf_nodes + ops_nodes
    # Reverse pass: upstream gradient of every node, from the loss back.
    for n in order:
        n.grad = 0.0
    out.grad = 1.0
    for n in reversed(ops_nodes):
        for child, d in zip(n.inputs, n.local):
            child.grad += n.grad * d
    grads = {lab: 0.0 for lab in labels}
    for (kind, i), leaf in leaves.items():
        if kind == "p":
            grads[labels[i]] = leaf.grad
    return Trace(
        model_name=model.name,
        nodes=order,
        loss=out.value,
        gradients=grads,
        params=dict(zip(labels, map(float, theta_row))),
        data=dict(zip(dlabels, map(float, data_row))),
        param_labels=list(labels),
    )


def trace(model, params: Mapping[str, Any] | None = None, point: Mapping[str, Any] | None = None) -> Trace:
    """Trace the loss of ``model`` at ``point`` (default: its first data point) and ``params``."""
    theta, data = point_row(model, point, params)
    return trace_row(model, theta, data)


def point_row(model, point: Mapping[str, Any] | None, params: Mapping[str, Any] | None):
    """Flat ``(theta, data)`` rows for a point in user form (default: the model's first data point)."""
    if point is None:
        if not model.dataset:
            raise InvalidValueError(
                f"Expected a point for model {model.name!r}, which has no dataset "
                f"(pass {', '.join('--' + v.name if v.name in ('x', 'y') else '--input ' + v.name + '=VALUE' for v in model.data_vars)})."
            )
        point = model.dataset[0]
    batch = model.batch([point], params)
    return np.asarray(batch.theta[0]), np.asarray(batch.data[0])


def params_below_kinks(tr: Trace) -> set[str]:
    """Parameters that feed a node evaluated exactly at its kink."""
    out: set[str] = set()
    stack = [i for n in tr.nodes if n.note for i in n.inputs]
    seen: set[int] = set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.kind == "param":
            out.add(n.name)
        stack.extend(n.inputs)
    return out
