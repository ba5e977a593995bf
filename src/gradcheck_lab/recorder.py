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

It gives up -- and ``make_fx`` with ``functionalize`` traces instead
(Note [Functional graphs] in torch_graph.py) -- where its graph could differ
from the function's meaning: an op that mutates a tensor or returns one of
its arguments (in-place writes and aliasing, which functionalization
rewrites), an op that reads a value into Python (``.item()``, a
data-dependent branch: ``make_fx`` refuses these and the fidelity check
names the line), or an op whose schema it cannot read. A value read from a
tensor that depends on no input is a constant of the function (kornia's
Gaussian blur checks ``bool((sigma > 0).all())`` on its own sigma): the
read runs and is not recorded, as the same value comes out at any input
(that read sent MKD's descriptor to finite differences, over 600 s). Ops in a
decomposition ``table`` are recorded as the ops of their decomposition.
"""

from __future__ import annotations

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
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten, tree_map

    graph = torch.fx.Graph()
    node_of: dict[int, Any] = {}
    keep: list = []  # every tensor seen stays alive, so that no id is reused while recording
    consts: dict[str, Any] = {}

    sharing: dict[int, int] = {}  # storage address -> recorded tensors on it (Note [Recorded graphs], in place)
    live: set[int] = set()  # ids of the tensors that depend on an input
    sig: dict[int, tuple] = {}  # id -> (dtype, shape, storage) when bound: a change no op recorded shows

    def bind(t, node) -> None:
        if id(t) not in node_of:
            keep.append(t)
            key = _storage(t)
            sharing[key] = sharing.get(key, 0) + 1
        node_of[id(t)] = node
        sig[id(t)] = _signature(t)
        node.meta["val"] = t

    for i, t in enumerate(real):
        bind(t, graph.placeholder(f"arg{i}_1"))
        live.add(id(t))

    def arg(a):
        if not isinstance(a, torch.Tensor):
            return a
        n = node_of.get(id(a))
        if n is not None and sig.get(id(a)) != _signature(a):  # changed by no recorded op (module.double()'s .data =)
            if id(a) in live:
                raise Declined("a tensor that depends on the inputs changed outside the dispatcher")
            n = None
        if n is None:  # made outside the dispatcher (a closure's weight, torch.from_numpy): a constant
            name = f"_tensor_constant{len(consts)}"
            consts[name] = a.detach().clone()  # its value now: the function may write into it later
            n = graph.get_attr(name)
            bind(a, n)
        return n

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if table and func in table:
                with self:
                    return table[func](*args, **kwargs)
            with self:  # a composite op called from inside a decomposition: its own ops, as make_fx records them
                r = func.decompose(*args, **kwargs)
            if r is not NotImplemented:
                return r
            schema = getattr(func, "_schema", None)
            name = getattr(func, "__name__", "").split(".")[0]
            if name == "lift_fresh":  # torch.tensor(...) inside the function: a constant, bound where it is used
                return func(*args, **kwargs)
            tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            if name in _READS and not any(id(t) in live for t in tensors):
                return func(*args, **kwargs)  # a constant's value (a kernel's sigma checked > 0): the same anywhere
            if schema is None or name in _READS:
                raise Declined(f"{func}: reads a value that depends on the inputs")
            writes = [i for i, a in enumerate(schema.arguments) if a.alias_info is not None and a.alias_info.is_write]
            if writes:
                return in_place(func, writes, args, kwargs, tensors)
            out = func(*args, **kwargs)
            ins = {id(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
            outs = out if isinstance(out, (tuple, list)) else (out,)
            if any(isinstance(o, torch.Tensor) and id(o) in ins for o in outs):
                raise Declined(f"{func}: returns its own argument")
            node = graph.call_function(func, tree_map(arg, tuple(args)), tree_map(arg, dict(kwargs)))
            depends = any(id(t) in live for t in tensors)
            if isinstance(out, torch.Tensor):
                bind(out, node)
                if depends:
                    live.add(id(out))
            elif isinstance(out, (tuple, list)):
                node.meta["val"] = out
                for k, o in enumerate(out):
                    if isinstance(o, torch.Tensor):
                        bind(o, graph.call_function(operator.getitem, (node, k)))
                        if depends:
                            live.add(id(o))
            return out

    def in_place(func, writes, args, kwargs, tensors):
        """``self.op_(...)`` on a tensor of the function's own with no alias, recorded as ``op(...)``; a write
        of constants into a constant (a module built inside the function fills its buffers) runs unrecorded."""
        functional = _functional(func)
        t = args[0] if args else None
        if not any(id(a) in live for a in tensors):
            out = func(*args, **kwargs)
            written = {_storage(a) for i, a in enumerate(args) if i in writes and isinstance(a, torch.Tensor)}
            for a in keep:  # it and its aliases are constants again, bound at their next use with their new value
                if _storage(a) in written:
                    node_of.pop(id(a), None)
            return out
        if (functional is None or writes != [0] or kwargs.get("out") is not None or not isinstance(t, torch.Tensor)
                or not isinstance(node_of.get(id(t)), torch.fx.Node) or node_of[id(t)].op != "call_function"
                or sharing.get(_storage(t), 0) != 1 or t._base is not None):
            raise Declined(f"{func}: writes in place into an input, a constant or an aliased tensor")
        node = graph.call_function(functional, tree_map(arg, tuple(args)), tree_map(arg, dict(kwargs)))
        out = func(*args, **kwargs)
        bind(t, node)
        live.add(id(t))  # some argument depends on an input (the constant case returned above)
        return out

    class Visible(TorchFunctionMode):
        """An active torch-function mode, as under ``make_fx``: modules skip their fused fast paths
        (``TransformerEncoderLayer`` in eval mode would run as one opaque ``_transformer_encoder_layer_fwd``)."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with Visible(), Recorder():
        result = call(*real)
    flat = [t for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor)]
    graph.output([arg(t) for t in flat])
    root = torch.nn.Module()
    for name, t in consts.items():
        root.register_buffer(name, t)
    return torch.fx.GraphModule(root, graph)


def _storage(t) -> int:
    try:
        return int(t.untyped_storage().data_ptr())
    except Exception:  # noqa: BLE001 - a tensor without storage (sparse, nested): its own key
        return id(t)


def _functional(func):
    """The out-of-place overload of an in-place aten op (``aten.elu_.default`` -> ``aten.elu.default``)."""
    import torch

    packet = getattr(func, "overloadpacket", None)
    name = getattr(packet, "__name__", "")
    if not name.endswith("_") or name.startswith("_"):
        return None
    base = getattr(torch.ops.aten, name[:-1], None)
    return getattr(base, func._overloadname, None) if base is not None else None


def _signature(t) -> tuple:
    """What a ``.data =`` assignment changes and no recorded op does: dtype, shape and storage address."""
    try:
        return (t.dtype, tuple(t.shape), t.data_ptr())
    except Exception:  # noqa: BLE001 - a tensor without storage
        return (t.dtype, tuple(t.shape), None)
