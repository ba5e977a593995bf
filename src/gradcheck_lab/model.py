"""A model, written once and read by every engine.

A :class:`Model` is data plus two functions of ``(ops, p, v)`` (see
:mod:`gradcheck_lab.ops`): ``predict`` gives the model's output and ``loss``
the scalar loss of one sample. Each engine calls them with its own backend:
SymPy derives the closed form from the expression they build, torch records
its own autograd graph, NumPy evaluates them for finite differences. No engine
ever sees another engine's derivative.

Values travel between engines flattened: a batch of ``N`` points is a matrix
``theta`` of shape ``(N, P)`` (every scalar component of every parameter, in
declaration order, row-major) and a matrix ``data`` of shape ``(N, Q)`` (every
component of every input, then of the target; a class target is one-hot).
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from types import SimpleNamespace
from typing import Any

import numpy as np

from .errors import ExpressionError, InvalidValueError, UsageError

__all__ = ["Var", "Model", "Batch", "LOSSES"]

KINDS = ("real", "binary", "class")
#: Random points are drawn in blocks of this many, each from its own seeded generator (Note [Sampling]).
SAMPLE_BLOCK = 1024
#: Every SPREAD_EVERY-th random point is spread over magnitudes up to max_abs (Note [Sampling]).
SPREAD_EVERY = 8


@dataclass(frozen=True)
class Var:
    """A named parameter, input or target, with its shape and sampling domain.

    ``init`` is the initial value of a parameter: a number (every component)
    or an array of the variable's shape. Random points draw each component
    uniformly from ``domain``; property tests draw magnitudes from 1e-3 up to
    ``max_abs``. ``kind`` is ``"real"``, ``"binary"`` (0 or 1) or ``"class"``
    (an integer label in ``range(shape[0])``, stored one-hot).
    """

    name: str
    shape: tuple[int, ...] = ()
    init: Any = 1.0
    domain: tuple[float, float] = (-3.0, 3.0)
    max_abs: float = 1e3
    kind: str = "real"

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def labels(self) -> list[str]:
        """Component labels: ``w``, ``W1[3]``, ``W[1,0]``."""
        if not self.shape:
            return [self.name]
        return [f"{self.name}[{','.join(map(str, idx))}]" for idx in product(*map(range, self.shape))]

    def flat_names(self) -> list[str]:
        """Identifier-safe component names (used for SymPy symbols): ``W1_3``."""
        if not self.shape:
            return [self.name]
        return [self.name + "_" + "_".join(map(str, idx)) for idx in product(*map(range, self.shape))]

    def encode(self, value: Any) -> np.ndarray:
        """A user's value for this variable as its flat float components."""
        arr: np.ndarray
        if self.kind == "class":
            k = self.shape[0]
            if isinstance(value, (list, tuple, np.ndarray)) and np.size(value) == k:
                arr = np.asarray(value, dtype=float).ravel()
            else:
                label = _as_float(value, self.name)
                if label != int(label) or not 0 <= label < k:
                    raise InvalidValueError(
                        f"Expected {self.name} to be a class label in 0..{k - 1} but got {value!r}."
                    )
                arr = np.zeros(k)
                arr[int(label)] = 1.0
            return arr
        arr = np.asarray(value, dtype=object)
        if arr.shape == () and self.shape:
            arr = np.full(self.shape, value, dtype=object)
        if arr.shape != self.shape and arr.size == self.size:
            arr = arr.reshape(self.shape)
        if arr.shape != self.shape:
            raise InvalidValueError(
                f"Expected {self.name} to have shape {self.shape} ({self.size} values) "
                f"but got {arr.size} value(s)."
            )
        flat = np.array([_as_float(x, self.name) for x in arr.ravel()], dtype=float)
        if self.kind == "binary" and not np.all((flat == 0) | (flat == 1)):
            raise InvalidValueError(f"Expected {self.name} to be 0 or 1 but got {value!r}.")
        return flat

    def decode(self, flat: np.ndarray) -> Any:
        """Flat components back to the user's form (a class label for one-hot)."""
        if self.kind == "class":
            return int(np.argmax(flat))
        if not self.shape:
            return float(flat[0])
        return np.asarray(flat, dtype=float).reshape(self.shape).tolist()


def _as_float(value: Any, name: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InvalidValueError(f"Expected a number for {name} but got {value!r}.") from None
    if not math.isfinite(x):
        raise InvalidValueError(
            f"Expected a finite number for {name} but got {value!r}; gradients are checked at finite points only."
        )
    return x


@dataclass
class Batch:
    """``N`` points of one model: ``theta`` (N, P) parameters, ``data`` (N, Q) inputs and target."""

    theta: np.ndarray
    data: np.ndarray

    def __post_init__(self) -> None:
        self.theta = np.ascontiguousarray(self.theta, dtype=float)
        self.data = np.ascontiguousarray(self.data, dtype=float)
        if self.theta.ndim != 2 or self.data.ndim != 2 or len(self.theta) != len(self.data):
            raise UsageError(
                f"Expected theta (N, P) and data (N, Q) with the same N but got "
                f"{self.theta.shape} and {self.data.shape}."
            )

    def __len__(self) -> int:
        return len(self.theta)

    def take(self, index: Any) -> Batch:
        return Batch(self.theta[index], self.data[index])

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        return Batch(np.concatenate([b.theta for b in batches]), np.concatenate([b.data for b in batches]))


def _structure(var: Var, column: Callable[[int], Any], offset: int) -> Any:
    """The component values of ``var`` as a scalar or nested lists."""
    if not var.shape:
        return column(offset)
    items = [column(offset + i) for i in range(var.size)]
    for dim in reversed(var.shape[1:]):
        items = [items[i : i + dim] for i in range(0, len(items), dim)]
    return items


def _squared(ops, yhat, y):
    return (yhat - y) ** 2


def _absolute(ops, yhat, y):
    return ops.abs(yhat - y)


def _bce(ops, yhat, y):
    return -(y * ops.log(yhat) + (1 - y) * ops.log(1 - yhat))


def _huber(ops, yhat, y):
    # Note [Huber] in ops.py: delta = 1 (write ops.huber(yhat - y, delta) in a
    # loss function, or huber(... - y, delta) in an expression, for another).
    return ops.huber(yhat - y)


def _cross_entropy(ops, yhat, y):
    return -ops.sum([yk * ops.log(pk) for yk, pk in zip(y, yhat)])


#: Losses by name, ``(ops, prediction, target) -> loss``. Listed in docs/models.md.
LOSSES: dict[str, Callable] = {
    "squared": _squared,
    "absolute": _absolute,
    "huber": _huber,
    "bce": _bce,
    "cross_entropy": _cross_entropy,
}


@dataclass(eq=False)
class Model:
    """A differentiable model: parameters, inputs, target, prediction and loss.

    Build one with :meth:`from_function` (a Python function against ``ops``),
    :meth:`from_expr` (a whitelisted expression string) or take one from the
    catalog with :func:`gradcheck_lab.get_model`.
    """

    name: str
    params: tuple[Var, ...]
    inputs: tuple[Var, ...]
    target: Var
    predict: Callable
    loss_fn: Callable
    formula: str = ""
    loss_name: str = ""
    description: str = ""
    dataset: tuple[Mapping[str, Any], ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Every ``SPREAD_EVERY``-th random point spread over magnitudes (Note [Sampling]); False keeps every
    #: point in the domain (the drop-in gradcheck's points around the inputs).
    spread: bool = True
    #: Points per block of the random sequence (Note [Sampling]); the drop-in's models draw a few points a
    #: call, and a block of SAMPLE_BLOCK rows of a 1k-element input was most of a small call.
    block: int = SAMPLE_BLOCK
    #: Finite-difference steps relative to each component, ``|t|`` (1 at 0), not ``max(|t|, 1)`` (Note
    #: [Fallback reach] in torch_check.py: the user's real function, known only near the inputs).
    relative_steps: bool = False
    _cache: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ building
    @classmethod
    def from_function(
        cls,
        predict: Callable,
        *,
        params: Mapping[str, Any] | Sequence[Var],
        inputs: Sequence[str | Var] = ("x",),
        target: str | Var = "y",
        loss: str | Callable = "squared",
        name: str = "custom",
        formula: str = "",
        dataset: Sequence[Mapping[str, Any]] = (),
        description: str = "",
    ) -> Model:
        """A model from a forward function ``predict(ops, p, v)``.

        ``params`` maps each parameter name to its initial value (or is a
        list of :class:`Var`); ``loss`` is a name in :data:`LOSSES` or a
        function ``(ops, prediction, target) -> loss``.

        >>> from gradcheck_lab import Model
        >>> m = Model.from_function(lambda ops, p, v: ops.tanh(p.w * v.x), params={"w": 0.5})
        >>> m.param_labels
        ['w']
        """
        if isinstance(params, Mapping):
            # The shape of a parameter given by its initial value: {"W": [[...], [...]]} is a matrix.
            pvars = tuple(
                v if isinstance(v, Var) else Var(name, shape=np.shape(v), init=v) for name, v in params.items()
            )
        else:
            pvars = tuple(params)
        ivars = tuple(i if isinstance(i, Var) else Var(i) for i in inputs)
        tvar = target if isinstance(target, Var) else Var(target)
        if isinstance(loss, str):
            if loss not in LOSSES:
                raise UsageError(f"Expected a loss in {sorted(LOSSES)} but got loss={loss!r}.")
            loss_name, loss_of = loss, LOSSES[loss]
        elif callable(loss):
            loss_name, loss_of = getattr(loss, "__name__", "custom"), loss
        else:
            raise UsageError(f"Expected a loss name or function but got loss={loss!r} (type={type(loss).__name__}).")
        if not callable(predict):
            raise UsageError(f"Expected a function (ops, p, v) -> prediction but got {predict!r}.")

        def loss_fn(ops, p, v, _predict=predict, _loss=loss_of, _t=tvar.name):
            return _loss(ops, _predict(ops, p, v), getattr(v, _t))

        model = cls(
            name=name,
            params=pvars,
            inputs=ivars,
            target=tvar,
            predict=predict,
            loss_fn=loss_fn,
            formula=formula,
            loss_name=loss_name,
            description=description,
            dataset=tuple(dataset),
        )
        model._validate()
        return model

    @classmethod
    def from_expr(
        cls,
        expr: str,
        *,
        params: str | Sequence[str] | Mapping[str, float],
        inputs: str | Sequence[str] = ("x",),
        target: str = "y",
        loss: str | None = "squared",
        name: str = "expr",
        dataset: Sequence[Mapping[str, Any]] = (),
        domain: tuple[float, float] = (-3.0, 3.0),
    ) -> Model:
        """A model whose prediction (or loss) is ``expr``, parsed by a whitelist (never ``eval``).

        ``params`` is ``"w1,w2,b"``, a list of names (each starts at 1.0) or a
        mapping name -> initial value; ``inputs`` a comma string or list of
        names; ``target`` a name. ``loss`` is ``"squared"``, ``"absolute"``,
        ``"huber"`` (delta 1), ``"bce"`` (the target is then binary and
        ``expr`` a probability) or ``None``: ``expr`` is the loss itself and
        may use the target. ``cross_entropy`` needs a vector of class
        probabilities and is refused. Every parameter must appear in ``expr``
        (one that does not has a gradient of zero everywhere: almost always a
        typo); with a loss, ``expr`` is the prediction and may not use the
        target. Parameters and inputs are sampled from ``domain``; so is a
        real target. The grammar is in :mod:`gradcheck_lab.expr`.

        >>> from gradcheck_lab import Model
        >>> m = Model.from_expr("w1*x**2 + w2*x + b", params="w1,w2,b")
        >>> m.formula, m.param_labels
        ('y_hat = w1*x**2 + w2*x + b', ['w1', 'w2', 'b'])
        """
        # model imports expr, never the reverse (tests/test_imports.py).
        from .expr import evaluate, unparse

        _check_expr_loss(loss)
        inits = params if isinstance(params, Mapping) else {}
        tree, pnames, inames = _parse_expr(expr, params, inputs, target, loss)
        text = unparse(tree)

        def predict(ops: Any, p: Any, v: Any, _tree: Any = tree) -> Any:
            return evaluate(_tree, ops, {**vars(p), **vars(v)})

        pvars = [Var(p, init=inits.get(p, 1.0), domain=domain) for p in pnames]
        ivars = [Var(i, domain=domain) for i in inames]
        tvar = Var(target, domain=domain, kind="binary" if loss == "bce" else "real")
        if loss is None:
            model = cls(
                name=name,
                params=tuple(pvars),
                inputs=tuple(ivars),
                target=tvar,
                predict=predict,
                loss_fn=predict,
                formula=f"loss = {text}",
                loss_name="expression",
                description="user expression (the loss itself)",
                dataset=tuple(dataset),
            )
            model._validate()
        else:
            model = cls.from_function(
                predict,
                params=pvars,
                inputs=ivars,
                target=tvar,
                loss=loss,
                name=name,
                formula=f"{target}_hat = {text}",
                dataset=dataset,
                description=f"user expression, {loss} loss",
            )
        model.init_theta()  # rejects a NaN or malformed initial value now, not at the first check
        return model

    def _validate(self) -> None:
        # counted once (names.count per name was quadratic: 200 s for the 150,528 pixels of a 224x224 image)
        dup = {n for n, k in Counter(v.name for v in (*self.params, *self.inputs, self.target)).items() if k > 1}
        if dup:
            raise UsageError(f"Expected distinct variable names but {sorted(dup)} is used twice in model {self.name!r}.")
        for v in (*self.params, *self.inputs, self.target):
            if not v.name.isidentifier() or v.name.startswith("_"):
                raise UsageError(f"Expected an identifier not starting with '_' but got variable name {v.name!r}.")
            if v.kind not in KINDS:
                raise UsageError(f"Expected kind in {KINDS} but got {v.kind!r} for {v.name}.")
        if not self.params:
            raise UsageError(f"Expected at least one parameter in model {self.name!r} but got none.")

    # ------------------------------------------------------------ layout
    @property
    def data_vars(self) -> tuple[Var, ...]:
        return (*self.inputs, self.target)

    @property
    def param_labels(self) -> list[str]:
        if "param_labels" not in self._cache:
            self._cache["param_labels"] = [lab for v in self.params for lab in v.labels()]
        return list(self._cache["param_labels"])

    @property
    def n_params(self) -> int:
        return sum(v.size for v in self.params)

    @property
    def n_data(self) -> int:
        return sum(v.size for v in self.data_vars)

    def namespaces(
        self, theta_col: Callable[[int], Any], data_col: Callable[[int], Any]
    ) -> tuple[SimpleNamespace, SimpleNamespace]:
        """``(p, v)`` namespaces whose components come from two column accessors."""
        p, off = {}, 0
        for var in self.params:
            p[var.name] = _structure(var, theta_col, off)
            off += var.size
        v, off = {}, 0
        for var in self.data_vars:
            v[var.name] = _structure(var, data_col, off)
            off += var.size
        return SimpleNamespace(**p), SimpleNamespace(**v)

    def loss(self, ops: SimpleNamespace, theta_col: Callable[[int], Any], data_col: Callable[[int], Any]) -> Any:
        """The loss on backend ``ops``, components read through the two column accessors."""
        p, v = self.namespaces(theta_col, data_col)
        return self.loss_fn(ops, p, v)

    def prediction(
        self, ops: SimpleNamespace, theta_col: Callable[[int], Any], data_col: Callable[[int], Any]
    ) -> Any:
        """The prediction on backend ``ops`` (see :meth:`loss`)."""
        p, v = self.namespaces(theta_col, data_col)
        return self.predict(ops, p, v)

    # ------------------------------------------------------------ points
    def init_theta(self) -> np.ndarray:
        return np.concatenate([v.encode(v.init) for v in self.params])

    def param_offsets(self) -> dict[str, slice]:
        out, off = {}, 0
        for v in self.params:
            out[v.name] = slice(off, off + v.size)
            off += v.size
        return out

    def theta_with(self, overrides: Mapping[str, Any] | None = None, base: np.ndarray | None = None) -> np.ndarray:
        """Initial (or ``base``) parameters with ``overrides`` applied.

        A key is a parameter name (a number sets every component, a list sets
        each) or a component label such as ``W1[3]``.
        """
        theta = (self.init_theta() if base is None else np.array(base, dtype=float)).copy()
        offsets = self.param_offsets()
        labels = self.param_labels
        byvar = {v.name: v for v in self.params}
        for key, value in (overrides or {}).items():
            if key in byvar:
                theta[offsets[key]] = byvar[key].encode(value)
            elif key in labels:
                theta[labels.index(key)] = _as_float(value, key)
            else:
                close = difflib.get_close_matches(key, list(dict.fromkeys([*byvar, *labels])), n=3, cutoff=0.4)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise InvalidValueError(
                    f"Expected a parameter of model {self.name!r} ({', '.join(byvar)}) but got {key!r}.{hint}"
                )
        return theta

    def encode_data(self, point: Mapping[str, Any]) -> np.ndarray:
        """A point's inputs and target (user form) as one flat row."""
        missing = [v.name for v in self.data_vars if v.name not in point]
        if missing:
            raise InvalidValueError(
                f"Expected values for {', '.join(v.name for v in self.data_vars)} but {', '.join(missing)} "
                f"is missing; add it to the point."
            )
        unknown = [k for k in point if k not in {v.name for v in self.data_vars}]
        if unknown:
            raise InvalidValueError(
                f"Expected inputs/target of model {self.name!r} "
                f"({', '.join(v.name for v in self.data_vars)}) but got {unknown[0]!r}."
            )
        return np.concatenate([v.encode(point[v.name]) for v in self.data_vars])

    def batch(self, points: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None = None) -> Batch:
        """A batch from points in user form; each point may carry its own parameters.

        A point is a mapping of inputs and target (``{"x": 2, "y": 4}``) and
        may hold a ``"params"`` mapping that overrides ``params``.
        """
        if not points:
            raise InvalidValueError("Expected at least one point but got none.")
        base = self.theta_with(params)
        thetas, rows = [], []
        for pt in points:
            pt = dict(pt)
            own = pt.pop("params", None)
            thetas.append(self.theta_with(own, base=base) if own else base)
            rows.append(self.encode_data(pt))
        return Batch(np.array(thetas), np.array(rows))

    def default_batch(self, params: Mapping[str, Any] | None = None) -> Batch:
        """The model's dataset at its initial parameters (with ``params`` applied)."""
        return self.batch(list(self.dataset), params)

    def sample(self, n: int, seed: int = 0, start: int = 0, spread: bool = True) -> Batch:
        """Points ``start .. start + n - 1`` of the seeded random sequence, reproducibly.

        Note [Sampling]
        ~~~~~~~~~~~~~~~
        The sequence is cut into blocks of ``block`` points (``SAMPLE_BLOCK``
        unless the model says otherwise), block
        ``k`` drawn from ``numpy.random.default_rng([seed, k])``: a point's
        value depends only on ``seed`` and its index, never on how a run is
        chunked. Each component is uniform in its variable's ``domain``,
        except at every ``SPREAD_EVERY``-th point (index ``SPREAD_EVERY - 1``
        modulo it), where real variables are spread over magnitudes:
        ``+-10**u`` with ``u`` uniform in ``[-3, log10(max_abs)]``. Those
        points reach the tails (saturated activations, large logits,
        cancellation) where region-only bugs live, such as a backward that is
        wrong only where a pre-activation exceeds 20. ``spread=False`` keeps
        every point in the domain.
        """
        if n < 0 or start < 0:
            raise UsageError(f"Expected non-negative n and start but got n={n}, start={start}.")
        b = self.block
        first, last = start // b, (start + n - 1) // b if n else start // b
        thetas, datas = [], []
        for k in range(first, last + 1):
            th, da = self._sample_block(seed, k, spread)
            thetas.append(th)
            datas.append(da)
        lo = start - first * b
        theta = np.concatenate(thetas)[lo : lo + n]
        data = np.concatenate(datas)[lo : lo + n]
        return Batch(theta, data)

    def _sample_block(self, seed: int, k: int, spread_on: bool) -> tuple[np.ndarray, np.ndarray]:
        cache = self._cache.setdefault("sample_blocks", {})
        spread_on = spread_on and self.spread
        # The domains are part of the key: models made by dataclasses.replace share _cache (a traced graph's
        # model at new inputs drew its random points around the first call's inputs).
        key = (seed, k, spread_on, self.block, hash(tuple((v.domain, v.max_abs) for v in (*self.params, *self.data_vars))))
        if key in cache:
            return cache[key]
        n = self.block
        rng = np.random.default_rng([seed, k])
        spread = ((np.arange(n) % SPREAD_EVERY) == SPREAD_EVERY - 1) & spread_on

        def draw(var: Var) -> np.ndarray:
            if var.kind == "binary":
                return rng.integers(0, 2, size=(n, var.size)).astype(float)
            if var.kind == "class":
                return np.eye(var.shape[0])[rng.integers(0, var.shape[0], size=n)]
            lo, hi = var.domain
            flat = rng.uniform(lo, hi, size=(n, var.size))
            k = int(spread.sum())
            if k:
                top = math.log10(max(var.max_abs, 1e-3))
                mags = 10.0 ** rng.uniform(-3.0, top, size=(k, var.size))
                signs = np.where(rng.random((k, var.size)) < 0.5, -1.0, 1.0)
                flat[spread] = signs * mags
            return flat

        def draw_all(vs) -> np.ndarray:
            if not spread.any() and vs and all(v.kind == "real" and v.size == 1 for v in vs):
                # scalar variables, none spread: the same numbers as drawing each in turn (uniform(lo, hi)
                # is lo + (hi - lo) * random() from one stream), one NumPy call (a traced graph's 1k leaves)
                lo = np.array([v.domain[0] for v in vs], dtype=float)
                hi = np.array([v.domain[1] for v in vs], dtype=float)
                return (lo[:, None] + (hi - lo)[:, None] * rng.random((len(vs), n))).T
            return np.concatenate([draw(v) for v in vs], axis=1) if vs else np.zeros((n, 0))

        theta = draw_all(self.params)
        data = draw_all(self.data_vars)
        if len(cache) >= 4:  # bounded: memory must not grow with the number of points
            cache.clear()
        cache[key] = (theta, data)
        return theta, data

    def describe_point(self, batch: Batch, i: int) -> dict[str, Any]:
        """Point ``i`` of ``batch`` in user form: inputs, target and parameters."""
        out, off = {}, 0
        for var in self.data_vars:
            out[var.name] = var.decode(batch.data[i, off : off + var.size])
            off += var.size
        params, off = {}, 0
        for var in self.params:
            params[var.name] = var.decode(batch.theta[i, off : off + var.size])
            off += var.size
        out["params"] = params
        return out

    # ------------------------------------------------------------ symbolic form
    def symbols(self) -> tuple[list[Any], list[Any]]:
        """SymPy symbols (real) for the flat parameters and data, cached."""
        if "symbols" not in self._cache:
            import sympy as sp

            th = [sp.Symbol(n, real=True) for v in self.params for n in v.flat_names()]
            da = [sp.Symbol(n, real=True) for v in self.data_vars for n in v.flat_names()]
            self._cache["symbols"] = (th, da)
        return self._cache["symbols"]

    def loss_expr(self) -> Any:
        """The loss as a SymPy expression of the flat symbols, cached."""
        if "loss_expr" not in self._cache:
            from .ops import backend

            th, da = self.symbols()
            self._cache["loss_expr"] = self.loss(backend("sympy"), th.__getitem__, da.__getitem__)
        return self._cache["loss_expr"]

    def predict_expr(self) -> Any:
        """The prediction as SymPy expression(s), cached."""
        if "predict_expr" not in self._cache:
            from .ops import backend

            th, da = self.symbols()
            self._cache["predict_expr"] = self.prediction(backend("sympy"), th.__getitem__, da.__getitem__)
        return self._cache["predict_expr"]

    def summary(self) -> dict[str, Any]:
        """Name, formula, loss and parameters, as shown by ``list``."""
        return {
            "name": self.name,
            "formula": self.formula,
            "loss": self.loss_name,
            "description": self.description,
            "params": {v.name: list(v.shape) for v in self.params},
            "inputs": {v.name: list(v.shape) for v in self.inputs},
            "target": {self.target.name: self.target.kind},
            "n_params": self.n_params,
            "options": dict(self.options),
        }


def _check_expr_loss(loss: str | None) -> None:
    """Raise :class:`ExpressionError` unless ``loss`` is one :meth:`Model.from_expr` takes."""
    scalar = [k for k in LOSSES if k != "cross_entropy"]
    if loss is not None and loss not in scalar:
        why = "; cross_entropy needs a vector of class probabilities" if loss == "cross_entropy" else ""
        raise ExpressionError(
            f"Expected loss in {', '.join(scalar)}, or loss=None when the expression is the loss itself, "
            f"but got loss={loss!r}{why}."
        )


def _parse_expr(expr: str, params: Any, inputs: Any, target: Any, loss: str | None) -> tuple[Any, tuple[str, ...], tuple[str, ...]]:
    """:meth:`Model.from_expr`'s expression parsed, with the parameter and input names it declares.

    Raises :class:`ExpressionError` for bad names, an unused parameter, or the
    target in a prediction.
    """
    from .expr import check_names, names_used, parse, split_names

    pnames = check_names(split_names(params, "params"))
    if not pnames:
        raise ExpressionError("Expected at least one parameter (e.g. params='w,b') but got none.")
    if not isinstance(target, str):
        raise ExpressionError(f"Expected target as a name such as 'y' but got target={target!r}.")
    inames = check_names(split_names(inputs, "inputs"))
    declared = check_names([*pnames, *inames, target])
    tree = parse(expr, declared)
    used = names_used(tree)
    unused = [p for p in pnames if p not in used]
    if unused:
        raise ExpressionError(
            f"Expected every parameter to appear in the expression but got no use of "
            f"{', '.join(map(repr, unused))}; its gradient would be zero everywhere: use it or remove it "
            "from params.",
            expr,
        )
    if loss is not None and target in used:
        raise ExpressionError(
            f"Expected a prediction of parameters and inputs but got the target {target!r} at column "
            f"{used[target]}; pass loss=None if the expression is the loss itself.",
            expr,
            used[target],
        )
    return tree, pnames, inames
