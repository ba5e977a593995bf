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
        "derive", "explain", "train", "graph", "GradcheckError", "UsageError", "UnknownModelError",
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
