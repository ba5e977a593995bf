"""``train``: the lesson's per-sample SGD in PyTorch, every gradient checked.

This is the lesson's own loop, kept faithful so that it prints the lesson's
figures digit for digit (docs/lesson.md):

* every parameter is its own leaf tensor, ``torch.tensor([1.0])`` style
  (float32 by default, shape ``(1,)`` for a scalar), ``requires_grad=True``;
* the data are plain Python floats, as in the lesson's ``x_data`` list;
* per sample: ``l = loss(x, y)`` (the model's own loss function on the
  torch backend), ``l.backward()``, print ``grad:`` with x, y and each
  ``p.grad.item()``, then ``p.data -= lr * p.grad.data`` and
  ``p.grad.data.zero_()``;
* per epoch: print the epoch and ``l.item()`` of its last sample (the lesson
  prints ``progress:`` for the linear model and ``Epoch:`` for the
  quadratic one; every other model prints ``Epoch:``);
* before and after: the prediction at x = 4 (the model's own prediction
  function on the same leaf tensors).

Numbers are printed as Python's ``repr`` of the float64 converted from the
float32 ``.item()``: the shortest text that reads back to that float, which
is what the lesson's ``print`` shows.

At every step the autograd gradient is compared with SymPy's closed form
evaluated in float64 at the same parameters (the float32 values, converted
exactly) and the same sample, within the project's tolerance for ``dtype``
at that point: ``SAFETY * (eps(dtype) * M + tiny)``, ``M`` the rounding
scale measured there (Note [Tolerance model] in :mod:`gradcheck_lab.tolerance`). The first
disagreement stops training and is reported; ``zero_grad=False`` reproduces
the classic bug of never zeroing ``.grad``, which the check catches at the
first step whose accumulated gradient is not zero (step 2 for the lesson's
models). A parameter below a relu/abs evaluated exactly at 0 is not judged
at that step: the derivative is undefined there and torch picks 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidValueError, UsageError
from ..tolerance import SAFETY, tolerance_at

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["TrainResult", "Step", "Mismatch", "train", "parse_data", "plot_training", "DTYPES", "MAX_EPOCHS"]

DTYPES = ("float32", "float64")
#: Largest accepted epoch count (the loop keeps every step for the report).
MAX_EPOCHS = 100_000
#: How each model's lesson prints the epoch line; the default is ``Epoch:``.
EPOCH_LABEL = {"linear": "progress:"}


@dataclass
class Step:
    """One SGD step: the sample, the parameters it was computed at, loss and gradients."""

    step: int
    epoch: int
    sample: int
    x: Any
    y: Any
    params: list[float]
    loss: float
    grads: list[float]


@dataclass
class Mismatch:
    """The first step where autograd and the closed form disagree."""

    step: int
    epoch: int
    sample: int
    param: str
    autograd: float
    symbolic: float
    difference: float
    tolerance: float
    hint: str
    x: Any = None
    y: Any = None
    dtype: str = "float32"

    def message(self) -> str:
        """The report, several lines: where, both sides, the tolerance, the likely cause."""
        return "\n".join(
            [
                f"MISMATCH at step {self.step} (epoch {self.epoch}, sample {self.sample}: "
                f"x = {_fmt(self.x)}, y = {_fmt(self.y)}), parameter {self.param}:",
                f"  {'autograd (torch, ' + self.dtype + ')':<33} {self.autograd!r}",
                f"  {'symbolic (closed form, float64)':<33} {self.symbolic!r}",
                f"  |difference| {self.difference:.3g} > tolerance {self.tolerance:.3g} "
                f"= {SAFETY[self.dtype]:g} * (eps({self.dtype}) * M + tiny), M the rounding scale here",
                f"  {self.hint}",
                "Training stopped.",
            ]
        )


@dataclass
class TrainResult:
    """Everything one training run printed, as data.

    ``steps`` holds every step; ``epoch_losses`` the loss of each epoch's
    last sample; ``prediction_before``/``after`` the prediction at ``at``;
    ``mismatch`` the first failed gradient check (training stopped there),
    else ``None``.
    """

    model: str
    formula: str
    param_labels: list[str]
    lr: float
    epochs: int
    dtype: str
    zero_grad: bool
    data: list[dict[str, Any]]
    at: dict[str, Any]
    initial_params: list[float]
    prediction_before: Any
    steps: list[Step] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    prediction_after: Any = None
    final_params: list[float] = field(default_factory=list)
    mismatch: Mismatch | None = None
    checked_steps: int = 0
    epoch_label: str = "Epoch:"

    @property
    def ok(self) -> bool:
        return self.mismatch is None

    def lines(self) -> list[str]:
        """The run as the lesson prints it (see the module docstring)."""
        at = _fmt_at(self.at)
        out = [f"predict (before training) {at} {_fmt(self.prediction_before)}"]
        per_epoch = len(self.data)
        for s in self.steps:
            out.append(" ".join(["grad:", _fmt(s.x), _fmt(s.y), *map(_fmt, s.grads)]))
            if s.sample == per_epoch and (self.mismatch is None or s.step < self.mismatch.step):
                out.append(f"{self.epoch_label} {s.epoch} {_fmt(self.epoch_losses[s.epoch])}")
        if self.mismatch is not None:
            out += self.mismatch.message().splitlines()
        else:
            out.append(f"predict (after training) {at} {_fmt(self.prediction_after)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "formula": self.formula,
            "params": self.param_labels,
            "settings": {
                "lr": self.lr,
                "epochs": self.epochs,
                "dtype": self.dtype,
                "zero_grad": self.zero_grad,
                "initial_params": dict(zip(self.param_labels, self.initial_params)),
                "data": self.data,
            },
            "prediction_before": {"at": self.at, "value": self.prediction_before},
            "steps": [asdict(s) for s in self.steps],
            "epochs": [{"epoch": e, "loss": v} for e, v in enumerate(self.epoch_losses)],
            "prediction_after": None
            if self.prediction_after is None
            else {"at": self.at, "value": self.prediction_after},
            "final_params": dict(zip(self.param_labels, self.final_params)),
            "check": {
                "ok": self.ok,
                "checked_steps": self.checked_steps,
                "tolerance": f"{SAFETY[self.dtype]:g} * (eps({self.dtype}) * M + tiny), M measured per step (Note [Tolerance model])",
                "mismatch": None if self.mismatch is None else asdict(self.mismatch),
            },
        }


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, (bool, int, np.integer)):
        return str(int(v))
    return repr(float(v))


def _fmt_at(at: Mapping[str, Any]) -> str:
    def one(v):
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(one(x) for x in v) + "]"
        v = float(v)
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)  # the lesson's forward(4)

    vals = list(at.values())
    if len(vals) == 1:
        return one(vals[0])
    return ", ".join(f"{k}={one(v)}" for k, v in at.items())


# ---------------------------------------------------------------- validation
def parse_data(text: str, model) -> list[dict[str, Any]]:
    """``"1:2,2:4,3:6"`` -> ``[{"x": 1.0, "y": 2.0}, ...]``: samples ``X:Y`` separated by commas.

    Only for a model with one scalar input and a scalar target (or a class
    label). Spaces are ignored; ``;`` may separate samples too.

    >>> from gradcheck_lab import get_model
    >>> parse_data("1:2, 2:4", get_model("linear"))
    [{'x': 1.0, 'y': 2.0}, {'x': 2.0, 'y': 4.0}]
    """
    if len(model.inputs) != 1 or model.inputs[0].shape or model.target.shape and model.target.kind != "class":
        raise UsageError(
            f"Expected --data only for a model with one scalar input and one scalar target, "
            f"but model {model.name!r} has inputs {', '.join(v.name for v in model.inputs)}; "
            "it trains on its own dataset."
        )
    xname, yname = model.inputs[0].name, model.target.name
    items = [s.strip() for s in str(text).replace(";", ",").split(",")]
    if not any(items):
        raise InvalidValueError(f'Expected --data as X:Y pairs separated by commas (e.g. "1:2,2:4,3:6") but got {text!r}.')
    out = []
    for item in items:
        x, sep, y = item.partition(":")
        if not sep or ":" in y or not x.strip() or not y.strip():
            raise InvalidValueError(
                f'Expected --data as X:Y pairs separated by commas (e.g. "1:2,2:4,3:6") but got sample {item!r} in {text!r}.'
            )
        point = {}
        for name, s in ((xname, x), (yname, y)):
            try:
                val = float(s)
            except ValueError:
                raise InvalidValueError(f"Expected a number for {name} in --data but got {s.strip()!r} (sample {item!r}).") from None
            if not math.isfinite(val):
                raise InvalidValueError(f"Expected a finite number for {name} in --data but got {s.strip()!r}.")
            point[name] = val
        model.encode_data(point)  # validates binary/class targets
        out.append(point)
    return out


def _check_settings(lr: Any, epochs: Any, dtype: str) -> tuple[float, int]:
    try:
        lr_f = float(lr)
    except (TypeError, ValueError):
        raise InvalidValueError(f"Expected a number for lr but got lr={lr!r}.") from None
    if not math.isfinite(lr_f) or lr_f <= 0:
        raise InvalidValueError(f"Expected a finite learning rate > 0 but got lr={lr!r}.")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)):
        raise UsageError(f"Expected an integer number of epochs but got epochs={epochs!r} (type={type(epochs).__name__}).")
    if not 1 <= epochs <= MAX_EPOCHS:
        raise InvalidValueError(f"Expected 1 <= epochs <= {MAX_EPOCHS} but got epochs={epochs}.")
    if dtype not in DTYPES:
        raise UsageError(f"Expected dtype in {', '.join(DTYPES)} but got dtype={dtype!r}.")
    return lr_f, int(epochs)


def _resolve_at(model, at: Any, data: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    single = len(model.inputs) == 1
    if isinstance(at, Mapping):
        missing = [v.name for v in model.inputs if v.name not in at]
        if missing:
            raise InvalidValueError(f"Expected a value for input {missing[0]} in at={dict(at)!r}.")
        return {v.name: at[v.name] for v in model.inputs}
    if at is not None:
        if not single:
            raise UsageError(f"Expected at= as a mapping of {', '.join(v.name for v in model.inputs)} but got {at!r}.")
        return {model.inputs[0].name: at}
    if single and not model.inputs[0].shape:
        return {model.inputs[0].name: 4.0}  # the lesson's forward(4)
    return {v.name: data[0][v.name] for v in model.inputs}


def _value(t) -> Any:
    import torch

    if isinstance(t, (list, tuple)):
        return [_value(x) for x in t]
    if isinstance(t, torch.Tensor):
        return t.item() if t.numel() == 1 else t.detach().reshape(-1).tolist()
    return float(t)


# ---------------------------------------------------------------- the loop
def train(
    model: Model,
    *,
    lr: float = 0.01,
    epochs: int = 100,
    params: Mapping[str, Any] | None = None,
    dtype: str = "float32",
    data: Sequence[Mapping[str, Any]] | str | None = None,
    zero_grad: bool = True,
    at: Any = None,
) -> TrainResult:
    """Per-sample SGD on ``model``, the lesson's way, each gradient checked.

    ``params`` overrides initial values; ``data`` is a list of points in
    user form (or the ``"1:2,2:4"`` text of :func:`parse_data`), default the
    model's dataset; ``at`` the input of the before/after prediction
    (default 4 for a one-input model, else the first sample's inputs).
    """
    lr, epochs = _check_settings(lr, epochs, dtype)
    if isinstance(data, str):
        data = parse_data(data, model)
    points = [dict(p) for p in (model.dataset if data is None else data)]
    if not points:
        raise InvalidValueError(
            f"Expected training data for model {model.name!r} but it has no dataset; pass data (--data \"1:2,2:4\")."
        )
    rows = [model.encode_data(p) for p in points]
    theta0 = model.theta_with(params)
    at_map = _resolve_at(model, at, points)
    at_row = model.encode_data({**at_map, model.target.name: model.target.decode(rows[0][-model.target.size :])})

    import torch

    from ..engines.symbolic import compiled
    from ..ops import backend

    ops = backend("torch")
    leaves, index = _leaves(model, theta0, getattr(torch, dtype))

    def theta_col(i: int):
        leaf, k = index[i]
        return leaf if k is None else leaf.reshape(-1)[k]

    def predict() -> Any:
        n_in = sum(v.size for v in model.inputs)
        vals = [float(v) for v in at_row[:n_in]] + [None] * model.target.size
        return _value(model.prediction(ops, theta_col, vals.__getitem__))

    grad_fn = compiled(model)
    result = TrainResult(
        model=model.name,
        formula=model.formula,
        param_labels=model.param_labels,
        lr=lr,
        epochs=epochs,
        dtype=dtype,
        zero_grad=zero_grad,
        data=points,
        at=at_map,
        initial_params=_flat(leaves),
        prediction_before=predict(),
        epoch_label=EPOCH_LABEL.get(model.name, "Epoch:"),
    )
    if _descend(model, result, rows, ops, leaves, theta_col, grad_fn):
        result.prediction_after = predict()
        result.final_params = _flat(leaves)
    return result


def _leaves(model, theta0, dt) -> tuple[list, list]:
    """One torch leaf per parameter variable (the lesson's ``torch.Tensor([1.0])`` for a scalar).

    Also returns, per parameter component, its leaf and its index in it (None for a scalar).
    """
    import torch

    leaves, index = [], []
    offsets = model.param_offsets()
    for var in model.params:
        init = theta0[offsets[var.name]]
        if var.shape:
            leaf = torch.tensor(init.reshape(var.shape).tolist(), dtype=dt, requires_grad=True)
        else:
            leaf = torch.tensor([float(init[0])], dtype=dt, requires_grad=True)  # torch.Tensor([1.0])
        leaves.append(leaf)
        index += [(leaf, k if var.shape else None) for k in range(var.size)]
    return leaves, index


def _flat(tensors) -> list[float]:
    return [v for t in tensors for v in t.detach().reshape(-1).tolist()]


def _data_col_of(row):
    vals = [float(v) for v in row]  # Python floats, like the lesson's x_data
    return vals.__getitem__


def _descend(model, result: TrainResult, rows, ops, leaves, theta_col, grad_fn) -> bool:
    """The lesson's per-sample SGD into ``result``, each step's gradient checked.

    False where a check failed: training stops at that step.
    """
    import torch

    lr, dtype, zero_grad = result.lr, result.dtype, result.zero_grad
    xvar, tvar = model.inputs[0], model.target
    n_in = sum(v.size for v in model.inputs)
    step = 0
    for epoch in range(result.epochs):
        for s, row in enumerate(rows, 1):
            step += 1
            before = _flat(leaves)
            loss_t = model.loss(ops, theta_col, _data_col_of(row))
            if not (isinstance(loss_t, torch.Tensor) and loss_t.requires_grad):
                raise UsageError(f"Expected the loss of model {model.name!r} to depend on its parameters.")
            loss_t.backward()
            grads = _flat(p.grad if p.grad is not None else torch.zeros_like(p) for p in leaves)
            loss = loss_t.item()
            x = xvar.decode(row[: xvar.size]) if len(model.inputs) == 1 else [float(v) for v in row[:n_in]]
            y = tvar.decode(row[n_in:])
            result.steps.append(Step(step, epoch, s, x, y, before, loss, grads))
            mismatch = _check(model, step, epoch, s, before, row, grads, grad_fn, dtype, zero_grad)
            if mismatch is not None:
                mismatch.x, mismatch.y, mismatch.dtype = x, y, dtype
                result.mismatch = mismatch
                result.final_params = before
                return False
            result.checked_steps = step
            for p in leaves:  # the lesson's update, outside autograd
                if p.grad is not None:
                    p.data -= lr * p.grad.data
                    if zero_grad:
                        p.grad.data.zero_()
        result.epoch_losses.append(loss)  # l.item() of the epoch's last sample
    return True


def _check(model, step, epoch, sample, theta, row, grads, grad_fn, dtype, zero_grad):
    """Compare autograd with the closed form at this step (Note [Tolerance model])."""
    from ..model import Batch

    args = [*theta, *[float(v) for v in row]]
    with np.errstate(all="ignore"):
        sym = [float(v) for v in grad_fn(*args)]
        tols = tolerance_at(model, Batch(np.asarray([theta], dtype=float), np.asarray([row], dtype=float)), np.asarray([sym]), dtype)[0]
    kinked = None
    for label, g, ref, tol in zip(model.param_labels, grads, sym, tols):
        diff = abs(g - ref)
        if not (diff <= tol) and zero_grad:
            # A relu/abs evaluated exactly at 0 above this parameter: the
            # derivative is undefined there and torch picks a subgradient.
            if kinked is None:
                from .trace import params_below_kinks, trace_row

                kinked = params_below_kinks(trace_row(model, np.asarray(theta, float), np.asarray(row, float)))
            if label in kinked:
                continue
        if not (diff <= tol):  # also catches NaN on either side
            if not zero_grad:
                hint = (
                    "Likely cause: .grad was never zeroed (--no-zero-grad), so backward() added this "
                    "step's gradient to the previous ones; zero it after each update "
                    "(p.grad.data.zero_())."
                )
            elif not (math.isfinite(g) and math.isfinite(ref)):
                hint = "A gradient is not finite here: the point is outside the loss's domain or overflowed."
            else:
                hint = (
                    "The difference exceeds float rounding at this magnitude: check the model's rules "
                    "(or a relu/abs evaluated exactly at 0, where the derivative is undefined)."
                )
            return Mismatch(step, epoch, sample, label, g, ref, diff, tol, hint)
    return None


def plot_training(result: TrainResult, path: str) -> str:
    """Save the loss curve and the parameter trajectories of ``result`` as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s.step for s in result.steps]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(steps, [s.loss for s in result.steps], lw=0.8, label="loss per sample")
    per = len(result.data)
    ax1.plot(
        [(e + 1) * per for e in range(len(result.epoch_losses))],
        result.epoch_losses,
        "o",
        ms=2,
        label="epoch's last sample",
    )
    if all(s.loss > 0 for s in result.steps):
        ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.set_title(f"{result.model}: loss (lr={result.lr:g}, {result.dtype})")
    ax1.legend(fontsize=8)
    traj = np.array([s.params for s in result.steps] + ([result.final_params] if result.final_params else []))
    xs = list(range(len(traj)))
    for i, label in enumerate(result.param_labels):
        ax2.plot(xs, traj[:, i], lw=0.8, label=label)
    ax2.set_xlabel("step")
    ax2.set_ylabel("value")
    ax2.set_title("parameters")
    if len(result.param_labels) <= 12:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=100)
    except OSError as exc:
        from ..errors import UsageError

        raise UsageError(f"Expected a writable --plot path but saving {path!r} failed: {exc.strerror or exc}.") from None
    finally:
        plt.close(fig)
    return path
