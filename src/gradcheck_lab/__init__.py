"""gradcheck_lab: verify gradients three ways and settle every disagreement.

SymPy derives the closed form, torch autograd differentiates its own graph,
Richardson finite differences give an estimate with an error bar, and an
mpmath referee decides which one is off when they disagree.

The public names below are imported lazily (PEP 562), so ``import
gradcheck_lab`` and ``gradcheck-lab --help`` load neither torch nor SymPy.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # checking
    "verify": "gradcheck_lab.api",
    "assert_gradients_agree": "gradcheck_lab.api",
    "gradcheck": "gradcheck_lab.torch_check",
    "gradgradcheck": "gradcheck_lab.torch_check",
    "routing": "gradcheck_lab.torch_routing",
    "Report": "gradcheck_lab.report",
    # models
    "Model": "gradcheck_lab.model",
    "Var": "gradcheck_lab.model",
    "get_model": "gradcheck_lab.catalog",
    "list_models": "gradcheck_lab.catalog",
    # teaching
    "derive": "gradcheck_lab.teaching",
    "explain": "gradcheck_lab.teaching",
    "train": "gradcheck_lab.teaching",
    "graph": "gradcheck_lab.teaching",
    # errors
    "GradcheckError": "gradcheck_lab.errors",
    "UsageError": "gradcheck_lab.errors",
    "UnknownModelError": "gradcheck_lab.errors",
    "InvalidValueError": "gradcheck_lab.errors",
    "ExpressionError": "gradcheck_lab.errors",
    "GradientMismatch": "gradcheck_lab.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'gradcheck_lab' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
