"""``derive``: the loss and every partial derivative in closed form.

The loss is the model's own function run on the SymPy backend; the partial
derivatives are the symbolic engine's, simplified for reading
(:func:`gradcheck_lab.engines.symbolic.simplified`). The optional Hessian is
the engine's matrix of second derivatives, simplified where small.

A large subexpression that several partials share (the mlp's residual
``sum_j W2[j]*tanh(...) + b2 - y``) is shown once, with a name ``s1``, and
the partials use the name (:func:`gradcheck_lab.engines.symbolic.shared_form`):
written out, each of the mlp's 3H + 1 partials would repeat the H-term
residual, O(H^2) text (H = 256: 200 s to tidy and print, unreadable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["Derivation", "derive"]

#: Hessians with more entries (upper triangle) than this are only tidied
#: (``factor_terms``): ``simplify`` costs about 0.2 s even on a small ``tanh``
#: entry, and the default mlp's Hessian has 325.
HESSIAN_SIMPLIFY_MAX_ENTRIES = 21


@dataclass
class Derivation:
    """Closed forms of one model, as SymPy expressions.

    ``partials`` is a list of ``(label, expression)``: ``dloss/dw1`` and its
    closed form; ``hessian`` a list of ``(row label, column label,
    expression)`` for the upper triangle (empty unless asked for).
    ``shared`` lists ``(symbol, expression)``: names the partials use for
    large shared subexpressions (empty for small models); substituting them
    (:meth:`closed`) gives the closed forms.
    """

    model: str
    formula: str
    symbols: dict[str, str]
    loss: Any
    prediction: Any
    partials: list[tuple[str, Any]]
    hessian: list[tuple[str, str, Any]] = field(default_factory=list)
    param_labels: list[str] = field(default_factory=list)
    param_symbols: list[Any] = field(default_factory=list)
    shared: list[tuple[Any, Any]] = field(default_factory=list)

    def closed(self, e):
        """``e`` with the shared names substituted back (a closed form in the model's symbols)."""
        for s, v in reversed(self.shared):
            e = e.xreplace({s: v})
        return e

    def render(self, form: str = "str") -> dict[str, Any]:
        """Every expression as text: ``str`` (one line), ``pretty`` (2-D) or ``latex``.

        ``equations`` lists ``(left side, right side)`` pairs in that form:
        the loss, each partial derivative, then the Hessian entries.
        """
        import sympy as sp

        fn = {"str": sp.sstr, "pretty": lambda e: sp.pretty(e, use_unicode=True), "latex": sp.latex}[form]
        pred = self.prediction
        out = {
            "loss": fn(self.loss),
            "prediction": [fn(p) for p in pred] if isinstance(pred, (list, tuple)) else fn(pred),
            "shared": {str(s): fn(e) for s, e in self.shared},
            "partials": {label: fn(e) for label, e in self.partials},
            "hessian": [{"row": r, "col": c, "expr": fn(e)} for r, c, e in self.hessian],
        }
        if form == "latex":
            sym = {lab: sp.latex(s) for lab, s in zip(self.param_labels, self.param_symbols)}
            lhs = [r"\frac{\partial L}{\partial " + sym[lab[len("dloss/d"):]] + "}" for lab, _ in self.partials]
            lhs += [
                r"\frac{\partial^{2} L}{" + (rf"\partial {sym[r]}^{{2}}" if r == c else rf"\partial {sym[r]} \partial {sym[c]}") + "}"
                for r, c, _ in self.hessian
            ]
            loss_lhs = "L"
            names = [sp.latex(s) for s, _ in self.shared]
        else:
            lhs = [lab for lab, _ in self.partials] + [f"d2loss/d{r}d{c}" for r, c, _ in self.hessian]
            loss_lhs = "loss"
            names = list(out["shared"])
        rhs = list(out["partials"].values()) + [h["expr"] for h in out["hessian"]]
        out["equations"] = [(loss_lhs, out["loss"]), *zip(names, out["shared"].values()), *zip(lhs, rhs)]
        return out

    def to_dict(self) -> dict[str, Any]:
        text, latex = self.render("str"), self.render("latex")
        return {
            "model": self.model,
            "formula": self.formula,
            "symbols": self.symbols,
            "loss": text["loss"],
            "prediction": text["prediction"],
            "partials": text["partials"],
            "hessian": text["hessian"],
            "shared": text["shared"],
            "latex": {k: latex[k] for k in ("loss", "prediction", "shared", "partials", "hessian")}
            | {"equations": [list(eq) for eq in latex["equations"]]},
        }


def derive(model: Model, hessian: bool = False) -> Derivation:
    """The closed-form loss and partial derivatives of ``model`` (and its Hessian).

    >>> from gradcheck_lab import get_model
    >>> d = derive(get_model("affine"))
    >>> d.render()["partials"]
    {'dloss/dw': '2*x*(b + w*x - y)', 'dloss/db': '2*b + 2*w*x - 2*y'}
    """

    from ..engines.symbolic import hessian as sym_hessian
    from ..engines.symbolic import shared_form, simplified, tidy

    labels = model.param_labels
    th, da = model.symbols()
    names = {str(s): lab for s, lab in zip(th, labels)}
    names.update({str(s): lab for s, lab in zip(da, [lab for v in model.data_vars for lab in v.labels()])})
    shared, forms = shared_form(model)
    # With the shared names the partials are the chain rule's products, already tidy:
    # simplify would spend ~0.2 s on each (tanh) for nothing shorter.
    grads = forms if shared else simplified(model)
    partials = [(f"dloss/d{lab}", g) for lab, g in zip(labels, grads)]
    entries = []
    if hessian:
        H = sym_hessian(model)
        n = len(labels)
        simplify = n * (n + 1) // 2 <= HESSIAN_SIMPLIFY_MAX_ENTRIES
        for i in range(len(labels)):
            for j in range(i, len(labels)):
                entries.append((labels[i], labels[j], tidy(H[i, j], simplify)))
    return Derivation(
        model=model.name,
        formula=model.formula,
        symbols={k: v for k, v in names.items() if k != v},
        loss=model.loss_expr(),
        prediction=model.predict_expr(),
        partials=partials,
        hessian=entries,
        param_labels=list(labels),
        param_symbols=list(th),
        shared=shared,
    )
