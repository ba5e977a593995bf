"""``verify`` and ``assert_gradients_agree``: the check as data, and as an assertion."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import GradientMismatch, UsageError
from .model import Batch, Model

__all__ = ["verify", "assert_gradients_agree", "resolve_model"]

#: Random points are processed in chunks of this size (progress granularity).
CHUNK = 500
#: Derivatives shown in a report before "... N more".
SHOW_DERIVATIVES = 6


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
    from .engines.symbolic import simplified

    labels = model.param_labels
    shown = list(range(min(len(labels), SHOW_DERIVATIVES)))
    out = {labels[i]: str(e) for i, e in zip(shown, simplified(model, shown))}
    if len(labels) > len(shown):
        from .catalog import list_models

        how = f"`gradcheck-lab derive {model.name}`" if model.name in list_models() else "`gradcheck_lab.derive(model)`"
        out["..."] = f"{len(labels) - len(shown)} more; {how} shows them all"
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
    order: int = 1,
    **options: Any,
):
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
        Number of random points from the model's sampling domain (0 for none).
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
    order : 1 or 2
        2 checks the Hessian instead (:func:`gradcheck_lab.hessian.verify_hessian`).

    Examples
    --------
    >>> from gradcheck_lab import verify
    >>> report = verify("quadratic", points=[{"x": 2, "y": 4}], random=0)
    >>> report.ok, [c.exact for c in report.data_points[0].checks]
    (True, [24.0, 12.0, 6.0])
    """
    from .candidates import as_candidate
    from .compare import compare
    from .report import build_report

    if order == 2:
        from .hessian import verify_hessian

        return verify_hessian(
            model, points=points, params=params, random=random, seed=seed, dtype=dtype, device=device,
            candidate=candidate, engines=engines, progress=progress, **options,
        )
    if order != 1:
        raise UsageError(f"Expected order 1 (gradient) or 2 (Hessian) but got order={order!r}.")
    started = time.perf_counter()
    model = resolve_model(model, **options)
    if isinstance(random, bool) or not isinstance(random, (int, np.integer)) or random < 0:
        raise UsageError(f"Expected random to be a non-negative integer but got random={random!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"Expected seed to be a non-negative integer but got seed={seed!r}.")
    cand = as_candidate(candidate) if candidate is not None else None

    parts = []
    if points is None:
        points = list(model.dataset)
    if points:
        batch = model.batch(list(points), params)
        parts.append(("data", _compare(compare, model, batch, dtype, device, cand, engines, force_referee=True)))
    elif params:
        raise UsageError("Expected points to go with params, but points=[] (random points draw their own parameters).")
    if random:
        sample = model.sample(int(random), seed=int(seed))
        chunks = []
        for start in range(0, random, CHUNK):
            chunks.append(_compare(compare, model, sample.take(slice(start, start + CHUNK)), dtype, device, cand, engines))
            if progress:
                progress(min(start + CHUNK, random), random)
        parts.append(("random", _merge(chunks)))
    if not parts:
        raise UsageError("Expected at least one point: pass points or random > 0.")
    return build_report(
        model,
        parts,
        dtype=dtype,
        device=device,
        seed=int(seed) if random else None,
        derivatives=_derivative_strings(model),
        seconds=time.perf_counter() - started,
    )


def _compare(compare, model, batch: Batch, dtype, device, cand, engines, force_referee: bool = False):
    cgrads = cand.gradients(model, batch, dtype=dtype, device=device) if cand is not None else None
    rows = np.ones(len(batch), dtype=bool) if force_referee else None
    return compare(model, batch, dtype=dtype, device=device, engines=engines, candidate=cgrads, referee_rows=rows)


def _merge(chunks):
    """One Comparison from several over consecutive chunks of points."""
    if len(chunks) == 1:
        return chunks[0]
    from dataclasses import replace

    from .engines import Gradients

    first = chunks[0]

    def cat(get):
        vals = [get(c) for c in chunks]
        return None if vals[0] is None else np.concatenate(vals)

    results = {
        name: Gradients(
            r.engine,
            cat(lambda c, n=name: c.results[n].values),
            r.dtype,
            cat(lambda c, n=name: c.results[n].error),
            cat(lambda c, n=name: c.results[n].kink),
            cat(lambda c, n=name: c.results[n].lower),
            cat(lambda c, n=name: c.results[n].upper),
        )
        for name, r in first.results.items()
    }
    return replace(
        first,
        batch=Batch.concat([c.batch for c in chunks]),
        results=results,
        tol={k: cat(lambda c, k=k: c.tol[k]) for k in first.tol},
        scale=cat(lambda c: c.scale),
        exact=cat(lambda c: c.exact),
        refereed=cat(lambda c: c.refereed),
        kink=cat(lambda c: c.kink),
        fault={k: cat(lambda c, k=k: c.fault[k]) for k in first.fault},
        disagree=cat(lambda c: c.disagree),
        notes=[n for c in chunks for n in c.notes],
    )


def assert_gradients_agree(model: Model | str, *, random: int = 100, **kwargs: Any):
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
