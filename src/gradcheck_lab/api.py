"""``verify`` and ``assert_gradients_agree``: the check as data, and as an assertion."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import GradientMismatch, UsageError
from .model import Batch, Model

if TYPE_CHECKING:
    from .report import Report

__all__ = ["verify", "assert_gradients_agree", "resolve_model", "chunk_size"]

#: Working memory one chunk of random points may take (Note [Streaming] in report.py).
CHUNK_BYTES = 32 * 2**20
#: Float arrays kept per point and parameter component while a chunk is compared.
ARRAYS_PER_COMPONENT = 48
MIN_CHUNK, MAX_CHUNK = 64, 65536
#: The referee's budget for the random points of one run (Note [Verdict] in compare.py).
REFEREE_POINTS = 2000
REFEREE_SECONDS = 5.0
#: Catalog options as the CLI spells them.
_CLI_OPTION = {"H": "hidden", "d": "dim", "K": "classes"}
#: Models with more parameter components than this show no partials in a report (see ``derive``).
WIDE = 100
#: Derivatives shown in a report before "... N more".
SHOW_DERIVATIVES = 6
#: Losses whose expression tree is larger than this (nodes, shared subtrees counted at each use) show no
#: partials in a report: a traced transformer layer's closed forms took 140 s to print (mlp H=16: 151).
PRINT_SIZE = 2000


def resolve_model(model: Model | str, **options: Any) -> Model:
    """A :class:`Model` from a model or a catalog name (with options)."""
    from .catalog import get_model

    if isinstance(model, Model):
        if options:
            raise UsageError(f"Expected catalog options only with a model name but got a Model and {sorted(options)}.")
        return model
    if isinstance(model, str):
        return get_model(model, **options)
    raise UsageError(f"Expected a Model or a catalog model name but got model={model!r} (type={type(model).__name__}).")


def _derivative_strings(model: Model) -> dict[str, str]:
    """The first derivatives as text for the report, cached on the model (printing costs ms)."""
    if "derivative_strings" in model._cache:
        return dict(model._cache["derivative_strings"])
    from .engines.symbolic import _derivation, simplified

    size = max(_derivation(model).size.values(), default=0)
    if model.n_params > WIDE or size > PRINT_SIZE:
        # Printing a wide or deep model's partials costs seconds to minutes (each holds the whole
        # residual); the report names where to read them instead.
        from .catalog import list_models

        opts = " ".join(f"--{_CLI_OPTION.get(k, k)} {v}" for k, v in model.options.items())
        how = (f"`gradcheck-lab derive {model.name} {opts}`".replace(" `", "`") if model.name in list_models()
               else "`gradcheck_lab.derive(model)`")
        what = f"{model.n_params} partials" if model.n_params > WIDE else \
            f"{model.n_params} partials of a {size:,}-node loss, too large to print here"
        out = {"...": f"{what}; {how} shows them"}
        model._cache["derivative_strings"] = dict(out)
        return out

    labels = model.param_labels
    shown = list(range(min(len(labels), SHOW_DERIVATIVES)))
    out = {labels[i]: str(e) for i, e in zip(shown, simplified(model, shown))}
    if len(labels) > len(shown):
        from .catalog import list_models

        how = f"`gradcheck-lab derive {model.name}`" if model.name in list_models() else "`gradcheck_lab.derive(model)`"
        out["..."] = f"{len(labels) - len(shown)} more; {how} shows them all"
    model._cache["derivative_strings"] = dict(out)
    return out


def verify(
    model: Model | str,
    *,
    points: Sequence[Mapping[str, Any]] | None = None,
    params: Mapping[str, Any] | None = None,
    random: int = 1000,
    seed: int = 0,
    dtype: str = "float64",
    device: str = "cpu",
    candidate: Any = None,
    engines: Mapping[str, Callable] | None = None,
    progress: Callable[[int, int], None] | None = None,
    strict: bool = False,
    referee_points: int = REFEREE_POINTS,
    referee_seconds: float = REFEREE_SECONDS,
    order: int = 1,
    **options: Any,
) -> Report:
    """Check the model's gradients with every engine; return a :class:`Report`.

    Parameters
    ----------
    model : Model or str
        A model, or a catalog name (``options`` configure it: ``H``,
        ``activation``, ``d``, ``K``).
    points : list of mappings, optional
        Explicit points (``{"x": 2, "y": 4}``, optionally with a ``"params"``
        mapping); default the model's dataset. ``[]`` checks random points only.
    params : mapping, optional
        Parameter values for the explicit points (default: initial values).
    random : int
        Number of random points (0 for none): from the model's sampling
        domain, every 8th spread over magnitudes up to each variable's
        ``max_abs`` (:meth:`Model.sample`).
    seed : int
        Seed of the random points; the same seed gives the same points.
    dtype : "float64" or "float32"
        Precision of the autograd engine (and of a torch candidate).
    device : str
        torch device of the autograd engine, e.g. ``"cuda"``.
    candidate : callable, torch_loss(...) or torch.nn.Module, optional
        Your own gradient code, judged like an engine (see
        :mod:`gradcheck_lab.candidates`).
    engines : mapping, optional
        Replace engines by name (testing the checker itself).
    progress : callable(done, total), optional
        Called after each chunk of random points.
    strict : bool
        Count "numerically unstable" components (Note [Verdict]) as mismatches.
    referee_points, referee_seconds : int, float
        The referee's budget for the random points of this run (explicit
        points are always refereed); see Note [Verdict].

    Random points are checked in chunks sized to a memory budget
    (``CHUNK_BYTES``) and reduced into running summaries as they go, so
    memory does not grow with ``random``.
    order : 1 or 2
        2 checks the Hessian instead (:func:`_verify_hessian`, Note in hessian.py).

    Examples
    --------
    >>> from gradcheck_lab import verify
    >>> report = verify("quadratic", points=[{"x": 2, "y": 4}], random=0)
    >>> report.ok, [c.exact for c in report.data_points[0].checks]
    (True, [24.0, 12.0, 6.0])
    """
    return _verify(
        model, points=points, params=params, random=random, seed=seed, dtype=dtype, device=device,
        candidate=candidate, engines=engines, progress=progress, strict=strict, referee_points=referee_points,
        referee_seconds=referee_seconds, order=order, detail=True, **options,
    )


def _verify(
    model: Model | str,
    *,
    points: Sequence[Mapping[str, Any]] | None,
    params: Mapping[str, Any] | None,
    random: int,
    seed: int,
    dtype: str,
    device: str,
    candidate: Any,
    engines: Mapping[str, Callable] | None,
    progress: Callable[[int, int], None] | None,
    strict: bool,
    referee_points: int,
    referee_seconds: float,
    order: int,
    detail: bool,
    refused: Sequence[int] = (),
    **options: Any,
) -> Report:
    """:func:`verify`; ``detail=False`` lists the given points in full only when the check fails.

    ``refused``: indices of random points left out (the drop-in's points where
    the user's function raised its own error, Note [Trace fidelity]).

    The drop-in :func:`~gradcheck_lab.gradcheck` reads the given points only to
    name a fault: a passing call then skips building them (a third of a warm call).
    """
    from .candidates import as_candidate
    from .compare import RefereeBudget
    from .report import Accumulator

    if order == 2:
        return _verify_hessian(
            model, points=points, params=params, random=random, seed=seed, dtype=dtype, device=device,
            candidate=candidate, engines=engines, progress=progress, strict=strict,
            referee_points=referee_points, referee_seconds=referee_seconds, **options,
        )
    if order != 1:
        raise UsageError(f"Expected order 1 (gradient) or 2 (Hessian) but got order={order!r}.")
    started = time.perf_counter()
    model = resolve_model(model, **options)
    _check_run_arguments(random, seed, referee_points, referee_seconds)
    cand = as_candidate(candidate) if candidate is not None else None

    acc = Accumulator(model, detail=detail)
    budget = RefereeBudget(points=int(referee_points), seconds=float(referee_seconds))

    def run(batch: Batch, referee_rows: np.ndarray | None = None):
        return _compare(model, batch, dtype, device, cand, engines, budget, strict, referee_rows=referee_rows)

    if points is None:
        points = list(model.dataset)
    size = chunk_size(model)
    first = 0  # random points already checked together with the given ones
    if points:
        first = _check_given(acc, run, model, points, params, random=random, seed=seed, refused=refused, size=size,
                             detail=detail, progress=progress)
    elif params:
        raise UsageError("Expected points to go with params, but points=[] (random points draw their own parameters).")
    if random and not first:
        _check_random(acc, run, model, int(random), seed=seed, refused=refused, size=size, progress=progress)
    if not points and not random:
        raise UsageError("Expected at least one point: pass points or random > 0.")
    return acc.report(
        dtype=dtype,
        device=device,
        seed=int(seed) if random else None,
        derivatives=(lambda: _derivative_strings(model)),
        seconds=time.perf_counter() - started,
        strict=strict,
    )


def _check_run_arguments(random: Any, seed: Any, referee_points: Any, referee_seconds: Any) -> None:
    """Raise :class:`UsageError` unless the counts and the referee's budget are what :func:`verify` takes."""
    if isinstance(random, bool) or not isinstance(random, (int, np.integer)) or random < 0:
        raise UsageError(f"Expected random to be a non-negative integer but got random={random!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"Expected seed to be a non-negative integer but got seed={seed!r}.")
    if isinstance(referee_points, bool) or not isinstance(referee_points, (int, np.integer)) or referee_points < 0:
        raise UsageError(f"Expected referee_points to be a non-negative integer but got referee_points={referee_points!r}.")
    if not isinstance(referee_seconds, (int, float)) or not referee_seconds >= 0:
        raise UsageError(f"Expected referee_seconds to be a number >= 0 but got referee_seconds={referee_seconds!r}.")


def _check_given(acc, run, model: Model, points, params, *, random, seed, refused, size, detail, progress) -> int:
    """Check the given ``points`` (every one refereed) into ``acc``.

    Returns how many random points were checked in the same run (0 unless
    ``detail=False`` and all fit one chunk).
    """
    batch = model.batch(list(points), params)
    forced = np.ones(len(batch), dtype=bool)
    first = 0
    if random and len(batch) + random <= size and not detail:
        # The drop-in gradcheck's small checks: one run over the given and the random points
        # together pays for the engines' set-up once. The random points keep their own referee
        # budget (not forced) and are the same points as in a separate run. (verify itself keeps
        # two runs: the screening probes' noise, and so the given points' tolerances, would
        # otherwise depend on how many random points share their batch.)
        first = int(random)
        forced = np.concatenate([forced, np.zeros(first, dtype=bool)])
        batch = Batch.concat([batch, _without(model.sample(first, seed=int(seed), start=0), refused, 0)])
        first = len(batch) - len(forced) + first
        forced = forced[: len(batch)]
    cmp = run(batch, referee_rows=forced)
    if first:
        given, drawn = cmp.split(len(forced) - first)
        acc.add("data", given)
        acc.add("random", drawn)
        if progress:
            progress(first, first)
    else:
        acc.add("data", cmp)
    return first


def _check_random(acc, run, model: Model, random: int, *, seed, refused, size, progress) -> None:
    """Check ``random`` random points into ``acc``, a chunk of ``size`` at a time."""
    for start in range(0, random, size):
        stop = min(start + size, random)
        sample = _without(model.sample(stop - start, seed=int(seed), start=start), refused, start)
        if not len(sample):
            continue
        acc.add("random", run(sample), offset=start)
        if progress:
            progress(stop, random)


def _verify_hessian(
    model: Model | str,
    *,
    points: Sequence[Mapping[str, Any]] | None = None,
    candidate: Any = None,
    **kwargs: Any,
):
    """``verify(model, order=2)``: every engine's Hessian, judged like gradients; a Report.

    At each explicit point (default: the model's dataset) the whole Hessian is
    checked (one derived point per parameter direction, the referee on every
    one); each random point checks ``H u`` for a random direction ``u``.

    >>> from gradcheck_lab import verify
    >>> report = verify("quadratic", order=2, points=[{"x": 2, "y": 4}], random=5)
    >>> report.ok, [c.exact for c in report.data_points[0].checks]
    (True, [32.0, 16.0, 8.0])
    """
    from .hessian import hessian_points, hvp_model

    options = {k: kwargs.pop(k) for k in list(kwargs) if k in ("H", "activation", "d", "K")}
    base = resolve_model(model, **options)
    if candidate is not None:
        raise UsageError(
            "Expected no candidate with order=2: candidates are checked to first order; "
            "check a double backward with gradcheck_lab.gradgradcheck."
        )
    derived = hvp_model(base)
    direction = derived.inputs[-1].name
    pts = list(base.dataset) if points is None else list(points)
    return verify(derived, points=hessian_points(base, pts, direction), **kwargs)


def _without(sample: Batch, refused: Sequence[int], start: int) -> Batch:
    """``sample`` (random points ``start..``) less the ``refused`` indices."""
    if not refused:
        return sample
    drop = {int(i) - start for i in refused}
    return sample.take(np.array([i for i in range(len(sample)) if i not in drop], dtype=int))


def chunk_size(model: Model) -> int:
    """Points per chunk: the working arrays of one chunk stay near ``CHUNK_BYTES``."""
    per_point = 8 * (model.n_params * ARRAYS_PER_COMPONENT + model.n_data * 4)
    return int(min(MAX_CHUNK, max(MIN_CHUNK, CHUNK_BYTES // per_point)))


def _compare(model, batch: Batch, dtype, device, cand, engines, budget, strict, referee_rows=None):
    from .compare import compare

    cgrads = cand.gradients(model, batch, dtype=dtype, device=device) if cand is not None else None
    crun = (lambda b, s: cand.rounding(model, b, dtype=dtype, device=device, seed=s)) if cand is not None else None
    return compare(
        model, batch, dtype=dtype, device=device, engines=engines, candidate=cgrads,
        candidate_rounding=crun, referee_rows=referee_rows, budget=budget, strict=strict,
    )


def assert_gradients_agree(model: Model | str, *, random: int = 100, **kwargs: Any) -> Report:
    """Raise :class:`GradientMismatch` unless every engine (and ``candidate``) agrees.

    Takes the keyword arguments of :func:`verify` (``random`` defaults to 100
    here, to keep test suites quick). Returns the report when all agree.

    >>> from gradcheck_lab import assert_gradients_agree
    >>> def my_grad(params, point):          # d/dw (w*x - y)**2, by hand
    ...     return {"w": 2 * (params["w"] * point["x"] - point["y"]) * point["x"]}
    >>> assert_gradients_agree("linear", candidate=my_grad).ok
    True
    """
    report = verify(model, random=random, **kwargs)
    if not report.ok:
        raise GradientMismatch(report.message + "\n\n" + report.render(), report)
    return report
