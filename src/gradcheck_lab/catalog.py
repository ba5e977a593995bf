"""The catalog of ready models, each written once against ``ops``.

``linear``, ``affine`` and ``quadratic`` are the back-propagation lesson's
models (squared loss, initial parameters 1.0, data x = [1, 2, 3],
y = [2, 4, 6]). ``logistic``, ``mlp`` and ``softmax`` add a saturating
non-linearity, many weights, and vector inputs with matrix parameters.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import UnknownModelError, UsageError
from .model import Model, Var

__all__ = ["get_model", "list_models", "MODEL_OPTIONS", "ACTIVATIONS"]

LESSON_DATA = ({"x": 1.0, "y": 2.0}, {"x": 2.0, "y": 4.0}, {"x": 3.0, "y": 6.0})

#: Activations the mlp accepts (names of functions in ``ops``).
ACTIVATIONS = ("tanh", "sigmoid", "softplus", "relu", "sin")


def _lesson(name: str, predict: Callable, params: tuple[str, ...], formula: str, description: str) -> Model:
    return Model.from_function(
        predict,
        params=[Var(p, init=1.0, domain=(-3.0, 3.0)) for p in params],
        inputs=[Var("x", domain=(-3.0, 3.0))],
        target=Var("y", domain=(-10.0, 10.0)),
        loss="squared",
        name=name,
        formula=formula,
        dataset=LESSON_DATA,
        description=description,
    )


def _linear() -> Model:
    return _lesson("linear", lambda ops, p, v: p.w * v.x, ("w",), "y_hat = w*x", "the lesson's one-weight model")


def _affine() -> Model:
    return _lesson(
        "affine", lambda ops, p, v: p.w * v.x + p.b, ("w", "b"), "y_hat = w*x + b", "lesson exercise 1"
    )


def _quadratic() -> Model:
    return _lesson(
        "quadratic",
        lambda ops, p, v: p.w1 * v.x**2 + p.w2 * v.x + p.b,
        ("w1", "w2", "b"),
        "y_hat = w1*x**2 + w2*x + b",
        "lesson exercise 2",
    )


def _logistic() -> Model:
    def predict(ops, p, v):
        return ops.sigmoid(p.w * v.x + p.b)

    def bce_logits(ops, p, v):
        # Binary cross-entropy -(y log s + (1-y) log(1-s)) with s = sigmoid(z),
        # written in the equal form softplus(z) - y*z (Note [Stable forms]).
        z = p.w * v.x + p.b
        return ops.softplus(z) - v.y * z

    return Model(
        name="logistic",
        params=(Var("w", init=1.0, domain=(-3.0, 3.0), max_abs=10.0), Var("b", init=1.0, domain=(-3.0, 3.0), max_abs=10.0)),
        inputs=(Var("x", domain=(-3.0, 3.0), max_abs=3.0),),
        target=Var("y", kind="binary"),
        predict=predict,
        loss_fn=bce_logits,
        formula="y_hat = sigmoid(w*x + b)",
        loss_name="bce",
        description="logistic regression, binary cross-entropy",
        dataset=({"x": 1.0, "y": 0}, {"x": 2.0, "y": 0}, {"x": 3.0, "y": 1}),
    )


def _mlp(H: int = 8, activation: str = "tanh") -> Model:
    if activation not in ACTIVATIONS:
        close = difflib.get_close_matches(activation, ACTIVATIONS, n=2)
        raise UsageError(
            f"Expected activation in {', '.join(ACTIVATIONS)} but got {activation!r}."
            + (f" Did you mean {close[0]}?" if close else "")
        )

    def predict(ops, p, v):
        act = getattr(ops, activation)
        hidden = [act(p.W1[j] * v.x + p.b1[j]) for j in range(H)]
        return ops.sum([p.W2[j] * hidden[j] for j in range(H)]) + p.b2

    rng = np.random.default_rng(0)
    scale = 1.0 / np.sqrt(H)
    return Model.from_function(
        predict,
        params=[
            Var("W1", (H,), init=rng.uniform(-1, 1, H), domain=(-2.0, 2.0), max_abs=5.0),
            Var("b1", (H,), init=rng.uniform(-1, 1, H), domain=(-2.0, 2.0), max_abs=5.0),
            Var("W2", (H,), init=rng.uniform(-scale, scale, H), domain=(-2.0, 2.0), max_abs=5.0),
            Var("b2", init=0.0, domain=(-2.0, 2.0), max_abs=5.0),
        ],
        inputs=[Var("x", domain=(-3.0, 3.0), max_abs=3.0)],
        target=Var("y", domain=(-10.0, 10.0), max_abs=10.0),
        loss="squared",
        name="mlp",
        formula=f"y_hat = sum_j W2[j]*{activation}(W1[j]*x + b1[j]) + b2,  j = 0..{H - 1}",
        dataset=LESSON_DATA,
        description=f"one hidden layer, width {H}, {activation} ({3 * H + 1} parameters)",
    )


def _softmax(d: int = 2, K: int = 3) -> Model:
    def logits(ops, p, v):
        return [ops.sum([p.W[k][j] * v.x[j] for j in range(d)]) + p.b[k] for k in range(K)]

    def predict(ops, p, v):
        z = logits(ops, p, v)
        lse = ops.logsumexp(z)
        return [ops.exp(zk - lse) for zk in z]

    def cross_entropy(ops, p, v):
        # -sum_k y_k log softmax(z)_k = logsumexp(z) - sum_k y_k z_k (y one-hot).
        z = logits(ops, p, v)
        return ops.logsumexp(z) - ops.sum([v.y[k] * z[k] for k in range(K)])

    rng = np.random.default_rng(0)
    dataset = tuple(
        {"x": [round(float((n + 1) * (1.0 if j % 2 == 0 else -0.5)), 3) for j in range(d)], "y": n % K}
        for n in range(3)
    )
    return Model(
        name="softmax",
        params=(
            Var("W", (K, d), init=np.round(rng.uniform(-0.5, 0.5, (K, d)), 3), domain=(-2.0, 2.0), max_abs=5.0),
            Var("b", (K,), init=0.0, domain=(-2.0, 2.0), max_abs=5.0),
        ),
        inputs=(Var("x", (d,), domain=(-3.0, 3.0), max_abs=3.0),),
        target=Var("y", (K,), kind="class"),
        predict=predict,
        loss_fn=cross_entropy,
        formula=f"y_hat = softmax(W @ x + b),  W: {K}x{d}, x: {d}, {K} classes",
        loss_name="cross_entropy",
        description=f"softmax regression, {d}-dim input, {K} classes ({K * d + K} parameters)",
        dataset=dataset,
    )


#: name -> (factory, {option: (type, default, help)}). Options reach the
#: factory as keyword arguments (CLI: --hidden, --activation, --dim, --classes).
_CATALOG: dict[str, tuple[Callable[..., Model], dict[str, tuple[type, Any, str]]]] = {
    "linear": (_linear, {}),
    "affine": (_affine, {}),
    "quadratic": (_quadratic, {}),
    "logistic": (_logistic, {}),
    "mlp": (
        _mlp,
        {"H": (int, 8, "hidden width"), "activation": (str, "tanh", f"one of {', '.join(ACTIVATIONS)}")},
    ),
    "softmax": (_softmax, {"d": (int, 2, "input dimension"), "K": (int, 3, "number of classes")}),
}

#: Options each catalog model takes: name -> {option: (type, default, help)}.
MODEL_OPTIONS = {name: opts for name, (_, opts) in _CATALOG.items()}

_LIMITS = {"H": (1, 256), "d": (1, 64), "K": (2, 64)}

#: Catalog models built by name and options share one cache (the loss expression, its
#: derivation, the compiled functions): a model is a pure function of its name and
#: options, so ``get_model("mlp", H=256)`` called again derives nothing. Kept for the
#: last ``SHARED_CACHES`` configurations.
SHARED_CACHES = 16
_SHARED: OrderedDict[tuple, dict] = OrderedDict()


def list_models() -> list[str]:
    """Names of the catalog models."""
    return list(_CATALOG)


def get_model(name: str, **options: Any) -> Model:
    """A catalog model by name, configured by ``options``.

    >>> get_model("quadratic").param_labels
    ['w1', 'w2', 'b']
    >>> get_model("mlp", H=4, activation="sigmoid").n_params
    13
    """
    if not isinstance(name, str) or name not in _CATALOG:
        close = difflib.get_close_matches(str(name), list(_CATALOG), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"Expected a model in {', '.join(_CATALOG)} but got {name!r}.{hint} "
            "Run `gradcheck-lab list` to see the catalog."
        )
    factory, allowed = _CATALOG[name]
    clean = {}
    for key, value in options.items():
        if value is None:
            continue
        if key not in allowed:
            raise UsageError(
                f"Expected options of model {name!r} in {sorted(allowed) or 'none'} but got {key}={value!r}."
            )
        typ = allowed[key][0]
        if typ is int:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise UsageError(f"Expected an integer for {key} but got {key}={value!r}.")
            lo, hi = _LIMITS[key]
            if not lo <= value <= hi:
                raise UsageError(f"Expected {lo} <= {key} <= {hi} but got {key}={value}.")
        clean[key] = value
    model = factory(**clean)
    model.options = {k: clean.get(k, spec[1]) for k, spec in allowed.items()}
    shared_key = (name, tuple(sorted(model.options.items())))
    model._cache = _SHARED.pop(shared_key, model._cache)
    _SHARED[shared_key] = model._cache
    while len(_SHARED) > SHARED_CACHES:
        _SHARED.popitem(last=False)
    return model
