"""Write the three pages and their screenshots for docs/lesson.md (docs/img/*.png).

    PYTHONPATH=src python scripts/screenshots.py [--out docs/img] [--pages DIR]

Uses the browser the tests use: the system's Chromium (Debian's ``chromium``
package) driven by Playwright (:mod:`gradcheck_lab.html.browser` has the launch flags). The
pages are built with the library, as the CLI builds them:

* ``explain quadratic --x 2 --y 4`` (exercise 2), stepped to the backward pass;
* ``train quadratic`` and ``train linear --no-zero-grad``;
* ``verify quadratic --points 20000`` with a planted autograd error on one
  component of a few points, so the failing-point tables and the histograms'
  tail show.

The Report carries the streaming summaries (``counts``, ``histograms``); should one
lack them (an older report), the script computes them from one ``compare()`` of the same
random points (:func:`summaries`) so the screenshot shows those sections.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def summaries(cmp, ratio_edges, magnitude_edges) -> tuple[dict, dict]:
    """Verdict counts and histograms (the Report's streaming fields) from one Comparison."""
    res = cmp.results
    ref = np.where(np.isfinite(cmp.exact), cmp.exact, res["symbolic"].values)
    tiny = np.finfo(float).tiny
    fault = cmp.any_fault()
    counts = {
        "agree": int((~fault & ~cmp.kink).sum()),
        "mismatch": int(fault.sum()),
        "unstable": 0,
        "not_judged": 0,
        "kink": int((cmp.kink & ~fault).sum()),
    }
    edges = np.asarray(ratio_edges)
    medges = np.asarray(magnitude_edges)
    hist = {"ratio_edges": list(map(float, edges)), "engines": {}, "pairs": {},
            "magnitude_edges": list(map(float, medges)), "magnitude": {}}
    with np.errstate(all="ignore"):
        mag = np.clip(np.log10(np.maximum(np.abs(ref), tiny)), medges[0], medges[-1] - 1e-9)
        for e, g in res.items():
            r = np.log10(np.maximum(np.abs(g.values - ref) / np.maximum(cmp.tol[e], tiny), tiny))
            r = np.clip(r, edges[0], edges[-1] - 1e-9)
            hist["engines"][e] = np.histogram(r, edges)[0].tolist()
            hist["magnitude"][e] = np.histogram2d(mag.ravel(), r.ravel(), [medges, edges])[0].astype(int).tolist()
        for a, b in cmp.pairs:
            r = np.abs(res[a].values - res[b].values) / np.maximum(cmp.tol[a] + cmp.tol[b], tiny)
            r = np.clip(np.log10(np.maximum(r, tiny)), edges[0], edges[-1] - 1e-9)
            hist["pairs"][f"{a}~{b}"] = np.histogram(r, edges)[0].tolist()
    return counts, hist


def build(pages: Path) -> dict[str, Path]:
    from gradcheck_lab import get_model, train, verify
    from gradcheck_lab.compare import compare
    from gradcheck_lab.engines import Gradients, engine
    from gradcheck_lab.html import explain_page, train_page, verify_page, write_page

    out = {}
    q = get_model("quadratic")
    out["explain"] = write_page(explain_page(q, {"x": 2, "y": 4}, {"w1": 1, "w2": 1, "b": 1}), pages / "explain.html")
    out["train"] = write_page(train_page(train(q), q), pages / "train.html")
    lin = get_model("linear")
    out["train-no-zero-grad"] = write_page(train_page(train(lin, zero_grad=False), lin), pages / "train-no-zero-grad.html")

    real = engine("autograd")

    def planted(model, batch, **kw):  # autograd wrong by 1e-6 (relative) on w2 at every 2000th point
        g = real(model, batch, **kw)
        v = g.values.copy()
        v[::2000, 1] *= 1 + 1e-6
        return Gradients(g.engine, v, g.dtype, g.error, g.kink, g.lower, g.upper)

    n = 20_000
    rep = verify(q, random=n, seed=0, engines={"autograd": planted})
    if getattr(rep, "histograms", None) is None:
        cmp = compare(q, q.sample(n, seed=0), engines={"autograd": planted})
        rep.counts, rep.histograms = summaries(cmp, np.linspace(-8, 4, 49), np.linspace(-6, 4, 21))
    out["verify"] = write_page(verify_page(rep), pages / "verify.html")
    return out


def shoot(pages: dict[str, Path], img: Path) -> None:
    from gradcheck_lab.html.browser import browser_page

    with browser_page(viewport=(1180, 820)) as page:
        page.goto(pages["explain"].resolve().as_uri())
        for _ in range(12):  # into the backward pass: n3 = w2 * x hands w2 its gradient
            page.keyboard.press("ArrowRight")
        page.screenshot(path=str(img / "explain.png"), clip={"x": 0, "y": 0, "width": 1180, "height": 700})
        page.goto(pages["train"].resolve().as_uri())
        page.keyboard.press("Home")
        for _ in range(4):
            page.keyboard.press("ArrowRight")
        page.screenshot(path=str(img / "train.png"), full_page=False)
        page.goto(pages["train-no-zero-grad"].resolve().as_uri())
        page.screenshot(path=str(img / "train-no-zero-grad.png"), full_page=True)
        page.goto(pages["verify"].resolve().as_uri())
        page.locator("h2", has_text="random points").scroll_into_view_if_needed()
        y = page.locator("h2", has_text="random points").bounding_box()["y"] + page.evaluate("window.scrollY")
        page.screenshot(path=str(img / "verify.png"), full_page=True, clip={"x": 0, "y": y - 10, "width": 1180, "height": 900})


def shrink(png: Path, colors: int = 96) -> None:
    """Re-save ``png`` with an adaptive palette: about 3x smaller, no visible loss on these flat pages."""
    from PIL import Image

    with Image.open(png) as im:
        small = im.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"), help="where the PNGs go (default docs/img)")
    ap.add_argument("--pages", help="where the HTML pages go (default a temporary directory)")
    args = ap.parse_args(argv)
    img = Path(args.out)
    img.mkdir(parents=True, exist_ok=True)
    pages_dir = Path(args.pages) if args.pages else Path(tempfile.mkdtemp(prefix="gradcheck-pages-"))
    pages_dir.mkdir(parents=True, exist_ok=True)
    pages = build(pages_dir)
    shoot(pages, img)
    for png in sorted(img.glob("*.png")):
        shrink(png)
    for name, p in pages.items():
        print(f"{name}: {p} ({p.stat().st_size / 1024:.0f} KB)")
    print(f"screenshots in {img}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
