"""A graph of the user's forward recorded from the real call, at dispatch level: the cheap tracer.

Note [Recorded graphs]
~~~~~~~~~~~~~~~~~~~~~~
``make_fx`` costs about 5 ms for a three-op function (proxies, fake tensor
metadata, functionalization), a third of a small gradcheck. A
``TorchDispatchMode`` that runs the function once and records each aten op
with the real tensors it received and returned costs 0.04 ms for the same
function, and it *is* the real call: the values are the function's own. The
recorded ops become the same ``torch.fx`` graph ``make_fx`` gives (aten
overloads, ``getitem`` for tuple results, tensors that no op produced as
constants), with each node's real value in ``meta["val"]``.

An in-place op on a tensor the function made itself, that no other
recorded tensor shares storage with (``ReLU(inplace=True)``, ``ELU(inplace=
True)``, ``h += x`` on a fresh ``h``), is recorded as its out-of-place op
(``elu_`` as ``elu``) and the tensor's later uses read that node: with no
alias there is nothing else the write can change. ALIKED's backbone
(``ELU(inplace=True)`` between convolutions) was traced by ``make_fx``, whose
functionalized graph ended in a ``copy_`` the tensor-level rules do not
cover, and went to finite differences (minutes).

It gives up where its graph could differ from the function's meaning: an
op that mutates a tensor or returns one of its arguments (in-place writes
and aliasing), or an op whose schema it cannot read. It then records
``torch.func.functionalize`` of the function, which rewrites writes into
views as scatters (Note [Functional graphs] in torch_graph.py), and only
where that fails too ``make_fx`` traces. A value read from a
tensor that depends on no input is a constant of the function (kornia's
Gaussian blur checks ``bool((sigma > 0).all())`` on its own sigma): the
read runs and is not recorded, as the same value comes out at any input
(that read sent MKD's descriptor to finite differences, over 600 s). Ops in a
decomposition ``table`` are recorded as the ops of their decomposition.

Note [Reads of the inputs]
~~~~~~~~~~~~~~~~~~~~~~~~~~
A value that depends on the inputs read into Python (``if (w <= 0).any():
raise``, ``if torch.any(dist != 0):``, ``int(y[0])`` as a slice bound,
``.item()``) makes the recorded graph the branch, or the number, of the
given inputs: ``make_fx`` refuses such code, and 10 of 130 kornia calls went
to finite differences alone for a validity check that never fires. The
read runs, the graph keeps the Python value it gave, and the graph module
lists the reads (``meta["reads"]``). Such a graph is the function only
where the same branch and the same numbers come out, which the fidelity
check decides (Note [Trace fidelity]): a read that scales the output
(``x / x.max().item()``) moves with the 10% perturbations of its random
points and the graph is found unfaithful; a branch that holds around the
inputs gives the function exactly, and its derivative there. A recording
with reads is judged only where at least one random point showed it (every
point refused: finite differences decide), and it is not cached: the next
call, at other values, may take another branch.

Its derivative can pass a call but never fails one. A solver that stops on
a test of its residual (``while (y * y - x).abs().max() > 1e-6: y = (y +
x / y) / 2``) records the given inputs' iterations; around them the same
number comes out, so the graph is the function, and its exact derivative
is that of the iterations, where a backward by the implicit function
theorem means the solution's (Note [Inexact forwards]): they differed by
4e-10 relative, below what finite differences resolve, and the correct
backward was blamed. So where the legs agree the call passes with its
symbolic leg (kornia's validity checks); where they do not, finite
differences of the real function decide, as for a forward outside torch.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any

__all__ = ["record", "Declined"]


class Declined(Exception):
    """The recorder cannot promise the function's meaning (Note [Recorded graphs])."""


#: Ops that read a tensor's value into Python: the graph would fix the branch taken.
_READS = frozenset({"_local_scalar_dense", "is_nonzero", "item", "equal", "allclose", "tolist"})


def record(call: Callable, real: list, table: dict | None = None):
    """A ``torch.fx.GraphModule`` of ``call(*real)``, recorded from the real call; :class:`Declined` if it cannot."""
    import torch
    from torch.utils._pytree import tree_flatten

    rec = _Recording(table)
    if isinstance(call, torch.fx.GraphModule):  # a graph traced again (decompositions): its constants are its own
        rec.owned = {id(b) for b in call.buffers()}
    for i, t in enumerate(real):
        rec.bind(t, rec.graph.placeholder(f"arg{i}_1"))
        rec.live.add(id(t))
    visible, recorder = _modes()
    with visible(), recorder(rec):
        result = call(*real)
    flat = [t for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor)]
    rec.graph.output([rec.arg(t) for t in flat])
    # ops whose values reach no output: a read's condition (Note [Reads of the inputs]), a statistic computed
    # and dropped (a stopping test's comparisons crashed the referee's ball arithmetic, which sums no booleans)
    if any(not n.users and n.op == "call_function" for n in rec.graph.nodes):
        rec.graph.eliminate_dead_code()
    root = torch.nn.Module()
    for name, t in rec.consts.items():
        root.register_buffer(name, t)
    gm = _graph_module(root, rec.graph)
    if rec.reads:  # Note [Reads of the inputs]
        gm.meta["reads"] = tuple(rec.reads)
    return gm


def _graph_module(root, graph):
    """A ``GraphModule`` whose Python code is generated on its first call only (Note [Recorded graphs]).

    ``torch.fx.GraphModule`` generates and compiles its ``forward`` at
    construction: 0.6 ms of a 1.5 ms recording of a five-op function, for a
    graph our engines read node by node and the fidelity check runs through
    :func:`gradcheck_lab.torch_graph.run_graph` (as fast as the compiled
    code on such graphs). torch's ``_LazyGraphModule`` (what ``torch.compile``
    uses) defers that: 0.08 ms. Private in torch, so a plain ``GraphModule``
    where it is missing.
    """
    import torch

    try:
        from torch.fx._lazy_graph_module import _LazyGraphModule
    except ImportError:  # pragma: no cover - an older or newer torch without it
        return torch.fx.GraphModule(root, graph)
    return _LazyGraphModule(root, graph)


class _Recording:
    """The graph being recorded and what it knows of the tensors it saw (Note [Recorded graphs])."""

    def __init__(self, table: dict | None):
        import torch

        self.table = table
        self.graph = torch.fx.Graph()
        self.node_of: dict[int, Any] = {}
        self.keep: list = []  # every tensor seen stays alive, so that no id is reused while recording
        self.consts: dict[str, Any] = {}
        self.sharing: dict[int, int] = {}  # storage address -> recorded tensors on it (in place)
        self.live: set[int] = set()  # ids of the tensors that depend on an input
        self.sig: dict[int, tuple] = {}  # id -> (dtype, shape, storage) when bound: a change no op recorded shows
        self.reads: list[str] = []  # ops that read a value depending on the inputs (Note [Reads of the inputs])
        self.owned: set[int] = set()  # ids of the buffers of a graph module being traced again (not copied)

    def bind(self, t, node) -> None:
        if id(t) not in self.node_of:
            self.keep.append(t)
            key = _storage(t)
            self.sharing[key] = self.sharing.get(key, 0) + 1
        self.node_of[id(t)] = node
        self.sig[id(t)] = _signature(t)
        node.meta["val"] = t

    def arg(self, a):
        """The node of ``a`` (a tensor; other arguments pass through); a constant if no recorded op made it."""
        import torch

        if not isinstance(a, torch.Tensor):
            return a
        n = self.node_of.get(id(a))
        if n is not None and self.sig.get(id(a)) != _signature(a):  # changed by no recorded op (.data =)
            if id(a) in self.live:
                raise Declined("a tensor that depends on the inputs changed outside the dispatcher")
            n = None
        if n is None:  # made outside the dispatcher (a closure's weight, torch.from_numpy): a constant
            name = f"_tensor_constant{len(self.consts)}"
            # its value now: the function may write into it later (a graph's own buffers it does not: copying a
            # vision transformer's weights again at each of its re-tracings took 13 of 99 s)
            self.consts[name] = a.detach() if id(a) in self.owned else a.detach().clone()
            n = self.graph.get_attr(name)
            self.bind(a, n)
        return n

    def dispatch(self, mode, func, args, kwargs):
        """One aten op of the real call: run it and record it, or decline (Note [Recorded graphs])."""
        import torch

        if self.table and func in self.table:
            with mode:
                return self.table[func](*args, **kwargs)
        name, composite, schema, writes = _op_facts(func)
        if composite:
            with mode:  # a composite op called from inside a decomposition: its own ops, as make_fx records them
                r = func.decompose(*args, **kwargs)
            if r is not NotImplemented:
                return r
        if name == "lift_fresh":  # torch.tensor(...) inside the function: a constant, bound where it is used
            return func(*args, **kwargs)
        tensors = _tensors_in((args, kwargs), [])
        if name in _READS and not any(id(t) in self.live for t in tensors):
            return func(*args, **kwargs)  # a constant's value (a kernel's sigma checked > 0): the same anywhere
        if name in _READS:  # Note [Reads of the inputs]: the branch or number of these inputs
            self.reads.append(name)
            return func(*args, **kwargs)
        if schema is None:
            raise Declined(f"{func}: an op whose schema the recorder cannot read")
        if writes:
            return self.in_place(func, writes, args, kwargs, tensors)
        out = func(*args, **kwargs)
        ins = {id(t) for t in tensors}
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if any(isinstance(o, torch.Tensor) and id(o) in ins for o in outs):
            raise Declined(f"{func}: returns its own argument")
        self.bind_result(func, args, kwargs, out, any(id(t) in self.live for t in tensors))
        return out

    def bind_result(self, func, args, kwargs, out, depends: bool) -> None:
        """Record ``func``'s node and bind its tensor results (``getitem`` nodes for a tuple)."""
        import torch

        node = self.graph.create_node("call_function", func, _mapped(self.arg, tuple(args)),
                                      _mapped(self.arg, dict(kwargs)), name=_node_name(func))
        if isinstance(out, torch.Tensor):
            self.bind(out, node)
            if depends:
                self.live.add(id(out))
        elif isinstance(out, (tuple, list)):
            node.meta["val"] = out
            for k, o in enumerate(out):
                if isinstance(o, torch.Tensor):
                    self.bind(o, self.graph.call_function(operator.getitem, (node, k)))
                    if depends:
                        self.live.add(id(o))

    def in_place(self, func, writes, args, kwargs, tensors):
        """``self.op_(...)`` on a tensor of the function's own with no alias, recorded as ``op(...)``; a write
        of constants into a constant (a module built inside the function fills its buffers) runs unrecorded."""
        import torch

        functional = _functional(func)
        t = args[0] if args else None
        if not any(id(a) in self.live for a in tensors):
            out = func(*args, **kwargs)
            written = {_storage(a) for i, a in enumerate(args) if i in writes and isinstance(a, torch.Tensor)}
            for a in self.keep:  # it and its aliases are constants again, bound at their next use with their new value
                if _storage(a) in written:
                    self.node_of.pop(id(a), None)
            return out
        if (functional is None or writes != [0] or kwargs.get("out") is not None or not isinstance(t, torch.Tensor)
                or not isinstance(self.node_of.get(id(t)), torch.fx.Node) or self.node_of[id(t)].op != "call_function"
                or self.sharing.get(_storage(t), 0) != 1 or t._base is not None):
            raise Declined(f"{func}: writes in place into an input, a constant or an aliased tensor")
        node = self.graph.call_function(functional, _mapped(self.arg, tuple(args)), _mapped(self.arg, dict(kwargs)))
        out = func(*args, **kwargs)
        self.bind(t, node)
        self.live.add(id(t))  # some argument depends on an input (the constant case returned above)
        return out


# An aten op's arguments nest in tuples, lists and dicts only: walked here, not by torch's pytree, which
# handled them at 0.1 ms an op (a third of a small function's recording).
def _tensors_in(x, out: list) -> list:
    """The tensors in ``x`` (nested tuples, lists and dict values), in order, appended to ``out``."""
    import torch

    if isinstance(x, torch.Tensor):
        out.append(x)
    elif isinstance(x, (tuple, list)):
        for v in x:
            _tensors_in(v, out)
    elif isinstance(x, dict):
        for v in x.values():
            _tensors_in(v, out)
    return out


def _mapped(f, x):
    """``x`` with ``f`` applied to every leaf (nested tuples, lists and dict values keep their types)."""
    if isinstance(x, tuple):  # a torch.Size (no tensors in it) stays itself
        return tuple(_mapped(f, v) for v in x) if type(x) is tuple or _tensors_in(x, []) else f(x)
    if isinstance(x, list):
        return [_mapped(f, v) for v in x]
    if isinstance(x, dict):
        return {k: _mapped(f, v) for k, v in x.items()}
    return f(x)


_MODES: list = []


def _modes():
    """The two torch modes of a recording, defined once (torch is imported lazily)."""
    if not _MODES:
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode

        class Visible(TorchFunctionMode):
            """An active torch-function mode, as under ``make_fx``: modules skip their fused fast paths
            (``TransformerEncoderLayer`` in eval mode would run as one opaque ``_transformer_encoder_layer_fwd``)."""

            def __torch_function__(self, func, types, args=(), kwargs=None):
                return func(*args, **(kwargs or {}))

        class Recorder(TorchDispatchMode):
            def __init__(self, rec: _Recording):
                super().__init__()
                self.rec = rec

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                return self.rec.dispatch(self, func, args, kwargs or {})

        _MODES.extend([Visible, Recorder])
    return _MODES[0], _MODES[1]


@functools.lru_cache(maxsize=4096)
def _op_facts(func) -> tuple[str, bool, Any, list[int]]:
    """What the recorder asks of an op at each call, looked up once: its name, whether it has a composite
    (CompositeImplicitAutograd) kernel to decompose, its schema and the arguments it writes into (about a
    fifth of a small function's recording when asked per call)."""
    from torch._C import DispatchKey

    name = getattr(func, "__name__", "").split(".")[0]
    can = getattr(func, "_can_decompose", None)
    try:
        composite = bool(can()) if can is not None else DispatchKey.CompositeImplicitAutograd in getattr(
            func, "py_kernels", {})
    except Exception:  # noqa: BLE001 - an op that cannot say: ask it at each call, as before
        composite = True
    schema = getattr(func, "_schema", None)
    writes = [] if schema is None else [i for i, a in enumerate(schema.arguments)
                                        if a.alias_info is not None and a.alias_info.is_write]
    return name, composite, schema, writes


@functools.lru_cache(maxsize=4096)
def _node_name(func) -> str:
    """The name torch.fx would derive for ``func``'s node (``mm_default``), derived once per op."""
    import torch

    return torch.fx.Graph()._target_to_str(func)


def _storage(t) -> int:
    try:
        return int(t.untyped_storage().data_ptr())
    except Exception:  # noqa: BLE001 - a tensor without storage (sparse, nested): its own key
        return id(t)


@functools.lru_cache(maxsize=1024)
def _functional(func):
    """The out-of-place overload of an in-place aten op (``aten.elu_.default`` -> ``aten.elu.default``): the
    one whose arguments have the same names and types. Not the one of the same overload name: ``pow_.Scalar``
    is ``(Tensor self, Scalar exponent)``, ``pow.Scalar`` is ``(Scalar self, Tensor exponent)``, and gpytorch's
    Matern kernel (``d.clone().pow_(2)``) crashed the tensor-level engine; ``pow.Tensor_Scalar`` is its twin."""
    import torch

    packet = getattr(func, "overloadpacket", None)
    name = getattr(packet, "__name__", "")
    if not name.endswith("_") or name.startswith("_"):
        return None
    base = getattr(torch.ops.aten, name[:-1], None)
    schema = getattr(func, "_schema", None)
    if base is None or schema is None:
        return None
    want = [(a.name, str(a.type)) for a in schema.arguments]
    named = getattr(base, func._overloadname, None)
    for candidate in [named] + [getattr(base, o, None) for o in base.overloads()]:
        theirs = getattr(candidate, "_schema", None)
        if theirs is not None and [(a.name, str(a.type)) for a in theirs.arguments] == want \
                and len(theirs.returns) == len(schema.returns):
            return candidate
    return None


def _signature(t) -> tuple:
    """What a ``.data =`` assignment changes and no recorded op does: dtype, shape and storage address."""
    try:
        return (t.dtype, tuple(t.shape), t.data_ptr())
    except Exception:  # noqa: BLE001 - a tensor without storage
        return (t.dtype, tuple(t.shape), None)
