"""The public surface: __all__ is honest, imports stay light."""

import subprocess
import sys

import gradcheck_lab


def test_all_names_resolve():
    for name in gradcheck_lab.__all__:
        assert getattr(gradcheck_lab, name) is not None, name


def test_all_is_sorted_and_complete():
    expected = {
        "verify", "assert_gradients_agree", "gradcheck", "gradgradcheck", "Report", "Model", "Var", "get_model", "list_models",
        "derive", "explain", "train", "graph", "routing", "GradcheckError", "UsageError", "UnknownModelError",
        "InvalidValueError", "ExpressionError", "GradientMismatch", "__version__",
    }
    assert set(gradcheck_lab.__all__) == expected


def test_unknown_attribute():
    import pytest

    with pytest.raises(AttributeError):
        gradcheck_lab.no_such_name  # noqa: B018


def test_errors_form_one_hierarchy():
    from gradcheck_lab import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.GradcheckError)
        assert cls.exit_code in (1, 2)
    assert issubclass(errors.GradientMismatch, AssertionError)


def test_import_is_light():
    code = "import sys, gradcheck_lab; bad=[m for m in ('torch','sympy','numpy','mpmath') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


def _unannotated():
    import inspect

    def gaps(fn, is_init=False):
        sig = inspect.signature(fn)
        out = {p.name for p in sig.parameters.values() if p.annotation is p.empty and p.name not in ("self", "cls")}
        if sig.return_annotation is sig.empty and not is_init:
            out.add("return")
        return out

    found = {}
    for name in gradcheck_lab.__all__:
        obj = getattr(gradcheck_lab, name)
        if isinstance(obj, type):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                member = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                if callable(member) and (missing := gaps(member, attr == "__init__")):
                    found[f"{name}.{attr}"] = missing
        elif callable(obj) and (missing := gaps(obj)):
            found[name] = missing
    return found


def test_public_api_is_annotated():
    # py.typed ships with the package (pyproject: package-data), so users' type checkers read these.
    from pathlib import Path

    assert (Path(gradcheck_lab.__file__).parent / "py.typed").is_file()
    # Every public callable: each parameter and the return (name -> what is missing).
    assert _unannotated() == {}
