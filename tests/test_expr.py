"""Tests of gradcheck_lab.expr: the whitelist parser, evaluate, and user models."""

from __future__ import annotations

import ast
import builtins

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gradcheck_lab import Model, get_model
from gradcheck_lab.engines import engine, referee
from gradcheck_lab.errors import ExpressionError, UsageError
from gradcheck_lab.expr import (
    MAX_DEPTH,
    MAX_LENGTH,
    UNARY_FUNCTIONS,
    BinOp,
    Call,
    Name,
    Neg,
    Num,
    Pos,
    evaluate,
    parse,
    unparse,
)
from gradcheck_lab.ops import backend

NAMES = ("w1", "w2", "b", "x", "y")
NODE_TYPES = (Num, Name, Neg, Pos, BinOp, Call)


def _balanced(k: int) -> str:
    """A full binary tree of ``x + x`` with ``2**(k+1) - 1`` nodes and depth ``k + 1``."""
    return "x" if k == 0 else f"({_balanced(k - 1)}+{_balanced(k - 1)})"


# ---------------------------------------------------------------- hostile input
#: (expression, column of the offending token or None, text the message must name)
HOSTILE = [
    ("__import__('os').system('echo hi')", 0, "'__import__'"),
    ("x.__class__", 1, "'.__class__'"),
    ("().__class__.__bases__", 0, "a tuple '()'"),
    ("lambda: 1", 0, "a lambda"),
    ("[x for x in y]", 0, "a comprehension"),
    ("open('f')", 0, "'open'"),
    ("eval('1')", 0, "'eval'"),
    ("exec('x = 1')", 0, "'exec'"),
    ("w1*x**2 + foo", 10, "'foo'"),
    ("x[0]", 1, "a subscript '[0]'"),
    ("w1 if x else b", 3, "a conditional expression"),
    ("x < 1", 2, "a comparison '< 1'"),
    ("x and w1", 2, "a boolean operator"),
    ("(x:=1)", 1, "an assignment expression"),
    ("f'{x}'", 0, "an f-string"),
    ("'abc'", 0, "a string \"'abc'\""),
    ("b'abc'", 0, "a bytes string"),
    ("1j*x", 0, "a complex number '1j'"),
    ("2**2**2**2**2", 3, "'2**2**2**2' (= 65536)"),
    ("x**100000", 3, "'100000'"),
    ("x**-65", 3, "'-65'"),
    ("9" * 400, 0, "magnitude at most 1e+300"),
    ("(" * 5000 + "x" + ")" * 5000, MAX_LENGTH, f"at most {MAX_LENGTH} characters"),
    ("(" * (MAX_DEPTH + 1) + "x" + ")" * (MAX_DEPTH + 1), MAX_DEPTH, f"nested at most {MAX_DEPTH} deep"),
    ("x+" * 2000 + "x", MAX_LENGTH, f"at most {MAX_LENGTH} characters"),
    ("x+" * MAX_DEPTH + "x", 0, f"at most {MAX_DEPTH} levels of nesting"),
    ("-" * (MAX_DEPTH + 5) + "x", MAX_DEPTH, f"at most {MAX_DEPTH} levels of nesting"),
    (_balanced(8), 992, "at most 500 numbers, names and operators"),  # the 501st node
    ("\u0435xp(x)", 0, "U+0435"),  # Cyrillic e
    ("\uff45\uff58\uff50(x)", 0, "U+FF45"),  # full-width exp: NFKC would fold it to exp
    ("x + w\u2081", 5, "U+2081"),  # subscript one
    ("exp(x, w1)", 7, "2 arguments"),
    ("exp()", 3, "0 arguments"),
    ("exp(x=w1)", 4, "'x='"),
    ("exp(*x)", 4, "'*x'"),
    ("exp(**x)", 4, "'**'"),
    ("*x", 0, "syntax error"),
    ("x;w1", 1, "syntax error"),
    ("x +", 3, "the end of the text"),
    ("\x00", 0, "U+0000"),
    ("\\x00", 1, "syntax error"),
    ("x\n+ w1", 1, "U+000A"),
    ("", 0, "empty string"),
    ("   ", 0, "empty string"),
    ("True", 0, "a boolean 'True'"),
    ("None", 0, "'None'"),
    ("...", 0, "'...'"),
    ("1e999", 0, "'1e999'"),
    ("nan", 0, "'nan'"),
    ("inf*x", 0, "'inf'"),
    ("sum", 0, "the function 'sum' without arguments"),
    ("sum(x, b)", 0, "'sum', which takes a list"),
    ("logsumexp(x)", 0, "'logsumexp', which takes a list"),
    ("x(2)", 0, "'x', a declared name"),
    ("exp(x)(2)", 0, "a function name before '('"),
    ("expp(x)", 0, "did you mean exp?"),
    ("x % 2", 2, "'%'"),
    ("x ^ 2", 2, "write ** for a power"),
    ("~x", 0, "'~'"),
    ("not x", 0, "'not'"),
    ("w1 @ x", 3, "'@'"),
    ("{x: 1}", 0, "a dict"),
    ("x, w1", 0, "a tuple"),
    ("x # + w1", 2, "'#'"),
    ("x**(1/0)", 4, "'1/0' (float division by zero)"),
    ("log(0)*x", 0, "'log(0)'"),
    ("sqrt(-1) + x", 0, "'sqrt(-1)'"),
    ("exp(1000)*x", 0, "'exp(1000)'"),
    ("1e200*1e200*x", 0, "'1e200*1e200'"),
    ("__builtins__", 0, "'__builtins__'"),
    ("globals()", 0, "'globals'"),
    ("(x).real", 3, "'.real'"),
    ("huber(x, w1)", 9, "a constant delta > 0"),
    ("huber(x, 0)", 9, "'0' (= 0)"),
    ("huber(x, -1/2)", 9, "'-1/2' (= -0.5)"),
    ("huber(x, delta=w1)", 15, "a constant delta > 0"),
    ("huber(x, 1, 2)", 12, "3 arguments"),
    ("huber(x, 1, delta=2)", 12, "'delta='"),
    ("huber(x, eps=1)", 9, "'eps='"),
    ("huber(delta=1)", 6, "'delta='"),
    ("huber()", 5, "0 arguments"),
    ("huber(x, __import__('os'))", 9, "'__import__'"),
    ("huber(x, 1e999)", 9, "'1e999'"),
    ("huber(x, **w1)", 9, "'**'"),
    ("erf(x, 2)", 7, "2 arguments"),
    ("log1p(-1)*x", 0, "'log1p(-1)'"),
    ("cosh(1000)*x", 0, "'cosh(1000)'"),
    ("expm1(x, delta=1)", 9, "'delta='"),
    ("   x.real", 4, "'.real'"),  # columns count the leading spaces
]


class _Tripwire:
    """Builtins that record any call that would run or import code."""

    def __init__(self):
        self.calls: list[str] = []
        self.armed = False  # only calls made while parsing count

    def install(self, monkeypatch):
        real_compile, real_import = builtins.compile, builtins.__import__

        def compile_(source, filename, mode, flags=0, *args, **kwargs):
            if self.armed and not flags & ast.PyCF_ONLY_AST:  # ast.parse compiles to a tree, nothing else
                self.calls.append(f"compile({source!r})")
            return real_compile(source, filename, mode, flags, *args, **kwargs)

        def import_(name, *args, **kwargs):
            if self.armed:
                self.calls.append(f"import {name}")
            return real_import(name, *args, **kwargs)

        def forbidden(name):
            return lambda *a, **k: self.calls.append(f"{name}{a}")

        monkeypatch.setattr(builtins, "compile", compile_)
        monkeypatch.setattr(builtins, "__import__", import_)
        for name in ("eval", "exec", "open"):
            monkeypatch.setattr(builtins, name, forbidden(name))


@pytest.mark.parametrize("text, position, named", HOSTILE, ids=[repr(h[0][:24]) for h in HOSTILE])
def test_hostile_input_is_rejected_before_anything_runs(text, position, named, monkeypatch):
    backend("float")  # constant folding uses it; build it before the tripwire is set
    wire = _Tripwire()
    with monkeypatch.context() as patched:
        wire.install(patched)
        wire.armed = True
        try:
            parse(text, NAMES)
        except ExpressionError as exc:
            error = exc
        else:
            error = None
        finally:
            wire.armed = False
    assert wire.calls == []
    assert error is not None, f"{text!r} was accepted"
    assert error.expression == text
    assert error.position == position
    assert named in str(error)
    assert str(error).startswith("Expected ")


def test_hostile_input_has_no_side_effect(tmp_path):
    target = tmp_path / "pwned"
    attempts = [
        f"open({str(target)!r}, 'w')",
        f"__import__('pathlib').Path({str(target)!r}).touch()",
        f"[open({str(target)!r}, 'w') for x in (1,)]",
        f"(lambda: open({str(target)!r}, 'w'))()",
    ]
    for text in attempts:
        with pytest.raises(ExpressionError):
            Model.from_expr(text, params="w1")
    assert not target.exists()


def test_expression_error_is_a_usage_error_with_a_pointer():
    with pytest.raises(UsageError) as info:
        parse("w1*x**2 + foo", NAMES)
    assert info.value.exit_code == 2
    assert str(info.value).splitlines()[1:] == ["  w1*x**2 + foo", "            ^"]


# ---------------------------------------------------------------- limits and accepted input
@pytest.mark.parametrize(
    "text",
    [
        "x**64",
        "x**-64",
        "x**(2**6)",
        "(" * MAX_DEPTH + "x" + ")" * MAX_DEPTH,
        "x+" * (MAX_DEPTH - 1) + "x",
        _balanced(7),
        "x" + " " * (MAX_LENGTH - 1),
        "   w1*x",
        "1e300*x",
        "0x10*x + 1_000*b",
        "-+-x",
    ],
)
def test_input_at_the_limits_is_accepted(text):
    assert isinstance(parse(text, NAMES), NODE_TYPES)


@pytest.mark.parametrize(
    "names", [["x", "x"], ["exp"], ["_w"], ["__class__"], ["w\u00e9"], ["lambda"], ["1w"], [""], [3]]
)
def test_bad_declared_names_are_rejected(names):
    with pytest.raises(ExpressionError, match="^Expected "):
        parse("1", names)


def test_names_may_be_a_set_a_list_or_a_comma_string():
    assert parse("w*x", {"w", "x"}) == parse("w*x", ["w", "x"]) == parse("w * x", "w, x")


def test_tree_is_small_immutable_and_ints_stay_ints():
    tree = parse("-w1*x**2 + exp(b)", NAMES)
    assert tree == BinOp(
        "+",
        BinOp("*", Neg(Name("w1")), BinOp("**", Name("x"), Num(2))),
        Call("exp", (Name("b"),)),
    )
    assert type(tree.left.right.right.value) is int
    with pytest.raises(AttributeError):
        tree.op = "-"


def test_unparse_is_normalised_with_minimal_brackets():
    assert unparse(parse("(w1 * (x**2))+w2*x  +b", NAMES)) == "w1*x**2 + w2*x + b"
    assert unparse(parse("(-x)**2 - -x**2 - (x - b)", NAMES)) == "(-x)**2 - -x**2 - (x - b)"
    assert unparse(parse("x**(b**2) / (x*b) ** -1", NAMES)) == "x**b**2/(x*b)**-1"


# ---------------------------------------------------------------- fuzzing
TOKENS = [
    "w1", "x", "y", "b", "foo", "_", "__class__", "exp", "log", "sum", "lambda", "if", "else", "and", "not",
    "0", "1", "2.5", "1e400", "9" * 30, "j", "+", "-", "*", "/", "**", "%", "@", "<", "=", ":=", "(", ")",
    "[", "]", "{", "}", ".", ",", ":", ";", "'", '"', "\\", "#", " ", "\u0435", "\uff58", "\x00", "\n",
]  # fmt: skip


def _parse_or_reject(text):
    try:
        tree = parse(text, NAMES)
    except ExpressionError as exc:
        assert exc.position is None or 0 <= exc.position <= len(text)
        return
    assert isinstance(tree, NODE_TYPES)
    assert parse(unparse(tree), NAMES) == tree


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_random_text_parses_or_raises_expression_error(text):
    _parse_or_reject(text)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=30).map("".join))
def test_fuzz_token_soup_parses_or_raises_expression_error(text):
    _parse_or_reject(text)


_trees = st.recursive(
    st.sampled_from([Name(n) for n in NAMES] + [Num(0), Num(2), Num(0.5)]),
    lambda sub: st.one_of(
        st.builds(BinOp, st.sampled_from(["+", "-", "*", "/", "**"]), sub, sub),
        st.builds(Neg, sub),
        st.builds(Pos, sub),
        st.builds(lambda f, a: Call(f, (a,)), st.sampled_from(UNARY_FUNCTIONS), sub),
    ),
    max_leaves=12,
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(_trees)
def test_fuzz_unparse_round_trips(tree):
    try:
        again = parse(unparse(tree), NAMES)
    except ExpressionError as exc:
        assume("constant" not in str(exc))  # e.g. 0/0 or log(0): rejected on purpose
        raise
    assert again == tree


def test_huber_delta_is_positional_or_keyword_and_round_trips():
    a, b = parse("huber(x, 2)", NAMES), parse("huber(x, delta=2)", NAMES)
    assert a == b == Call("huber", (Name("x"), Num(2)))
    assert parse("huber(x)", NAMES) == Call("huber", (Name("x"),))
    assert unparse(parse("huber(x - b, delta=1/2)", NAMES)) == "huber(x - b, 1/2)"
    assert parse(unparse(a), NAMES) == a
    # A constant call folds with its delta, like any constant.
    assert evaluate(parse("huber(3, 2)", NAMES), backend("float"), {}) == 4.0
    assert evaluate(parse("huber(x, 2)", NAMES), backend("float"), {"x": 3.0}) == 4.0


# ---------------------------------------------------------------- evaluation and models
def test_evaluate_hands_sympy_integer_exponents():
    import sympy as sp

    x = sp.Symbol("x")
    value = evaluate(parse("x**2 + 1/2", ["x"]), backend("sympy"), {"x": x})
    assert str(value) == "x**2 + 0.5"
    assert value.args[1].exp.is_Integer


def test_quadratic_from_expr_matches_the_catalog():
    m = Model.from_expr("w1*x**2 + w2*x + b", params="w1,w2,b")
    assert m.formula == "y_hat = w1*x**2 + w2*x + b"
    one = m.batch([{"x": 2, "y": 4}])
    np.testing.assert_array_equal(engine("symbolic")(m, one).values, [[24.0, 12.0, 6.0]])
    cat = get_model("quadratic")
    batch = cat.sample(20, seed=3)
    np.testing.assert_allclose(engine("symbolic")(m, batch).values, engine("symbolic")(cat, batch).values)


#: (expression, params, domain): between them every whitelisted function, with
#: domains that keep log/sqrt arguments positive and relu/abs away from their kinks.
AGREEMENT = [
    ("w*exp(x) + b", "w,b", (-2.0, 2.0)),
    ("log(exp(w*x) + 1) - b*x", "w,b", (-2.0, 2.0)),
    ("sqrt(w**2 + 1)*x + b", "w,b", (-3.0, 3.0)),
    ("sin(w*x) + cos(b)*x", "w,b", (-3.0, 3.0)),
    ("tanh(w*x + b)", "w,b", (-2.0, 2.0)),
    ("sigmoid(w*x) + softplus(b - x)", "w,b", (-3.0, 3.0)),
    ("relu(w*x) + relu(w - 5) + abs(b) + abs(b - 5)", "w,b", (0.5, 2.0)),
    ("square(w*x - b)/(1 + b**2)", "w,b", (-2.0, 2.0)),
    ("w/x + b**-2 + x**w", "w,b", (0.5, 2.0)),
    ("w*exp(1) + sqrt(2)*b - +x", "w,b", (-3.0, 3.0)),
    ("cosh(w*x) - sinh(b*x)", "w,b", (-2.0, 2.0)),
    ("asinh(w*x) + atan(b*x) + atan(1)", "w,b", (-3.0, 3.0)),
    ("log1p(w**2*x**2) + expm1(b*x)", "w,b", (-2.0, 2.0)),
    ("erf(w*x + b) + exp(erf(b))", "w,b", (-2.0, 2.0)),
    ("huber(w*x - b) + huber(w + b*x, delta=0.5) + huber(3*b, 2)", "w,b", (-3.0, 3.0)),
]


def test_agreement_table_uses_every_function():
    used = {f for text, _, _ in AGREEMENT for f in UNARY_FUNCTIONS if f + "(" in text}
    assert used == set(UNARY_FUNCTIONS)


@pytest.mark.parametrize("text, params, domain", AGREEMENT)
def test_all_engines_agree_on_expression_models(text, params, domain):
    m = Model.from_expr(text, params=params, domain=domain)
    batch = m.sample(40, seed=1, spread=False)
    exact = referee.gradients(m, batch)
    assert np.all(np.isfinite(exact))
    for name in ("symbolic", "autograd", "finite_differences"):
        np.testing.assert_allclose(engine(name)(m, batch).values, exact, rtol=1e-6, atol=1e-8, err_msg=name)


def test_loss_none_is_the_loss_itself():
    m = Model.from_expr("(w*x - y)**2", params="w", loss=None)
    assert (m.formula, m.loss_name) == ("loss = (w*x - y)**2", "expression")
    lin = get_model("linear")
    batch = lin.sample(20, seed=2)
    for name in ("symbolic", "autograd", "finite_differences"):
        np.testing.assert_allclose(engine(name)(m, batch).values, engine(name)(lin, batch).values, rtol=1e-9)


def test_bce_matches_the_catalog_logistic_model():
    m = Model.from_expr("sigmoid(w*x + b)", params={"w": 1.0, "b": 1.0}, loss="bce")
    assert m.target.kind == "binary"
    cat = get_model("logistic")
    batch = cat.sample(30, seed=4)
    for name in ("symbolic", "autograd", "finite_differences"):
        np.testing.assert_allclose(engine(name)(m, batch).values, engine(name)(cat, batch).values, rtol=1e-6)


def test_params_mapping_sets_initial_values_and_inputs_may_be_many():
    m = Model.from_expr(
        "w*u + b*v", params={"w": 0.5, "b": -2}, inputs="u, v", target="t", dataset=[{"u": 1, "v": 2, "t": 0}]
    )
    np.testing.assert_array_equal(m.init_theta(), [0.5, -2.0])
    assert [v.name for v in m.data_vars] == ["u", "v", "t"]
    np.testing.assert_allclose(engine("symbolic")(m, m.default_batch()).values, [[-7.0, -14.0]])


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(expr="w1*x + b", params="w1,w2,b"), "'w2'"),
        (dict(expr="w*x + y", params="w"), "the target 'y' at column 6"),
        (dict(expr="w*x", params=""), "''"),
        (dict(expr="w*x", params=[]), "at least one parameter"),
        (dict(expr="exp*x", params="exp"), "'exp'"),
        (dict(expr="w*x", params="w,w"), "distinct"),
        (dict(expr="x*x", params="x"), "distinct"),
        (dict(expr="_w*x", params="_w"), "'_'"),
        (dict(expr="w*x", params="w", loss="cross_entropy"), "vector of class probabilities"),
        (dict(expr="w*x", params="w", loss="hinge"), "loss='hinge'"),
        (dict(expr="w*x", params="w", target=3), "target"),
        (dict(expr="w*x", params=42), "comma string"),
        (dict(expr="w*z", params="w"), "'z'"),
        (dict(expr="huber(w*x, b)", params="w,b"), "a constant delta > 0"),
    ],
)
def test_model_from_expr_rejects_bad_arguments(kwargs, named):
    with pytest.raises(ExpressionError) as info:
        Model.from_expr(**kwargs)
    assert named in str(info.value)
