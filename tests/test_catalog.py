import pytest

from gradcheck_lab import UnknownModelError, UsageError, get_model, list_models


def test_catalog_names():
    assert list_models() == ["linear", "affine", "quadratic", "logistic", "mlp", "softmax"]


@pytest.mark.parametrize("name", ["linear", "affine", "quadratic"])
def test_lesson_models(name):
    m = get_model(name)
    assert m.loss_name == "squared"
    assert list(m.init_theta()) == [1.0] * m.n_params
    assert [dict(p) for p in m.dataset] == [{"x": 1.0, "y": 2.0}, {"x": 2.0, "y": 4.0}, {"x": 3.0, "y": 6.0}]


def test_sizes():
    assert get_model("mlp").n_params == 25
    assert get_model("mlp", H=64).n_params == 193
    assert get_model("softmax", d=4, K=5).n_params == 25
    assert get_model("softmax").param_labels[:3] == ["W[0,0]", "W[0,1]", "W[1,0]"]


def test_unknown_model_suggests():
    with pytest.raises(UnknownModelError, match="Did you mean quadratic"):
        get_model("quadratik")


@pytest.mark.parametrize(
    "name, opts, fragment",
    [
        ("mlp", {"H": 0}, "1 <= H"),
        ("mlp", {"H": 2.5}, "integer"),
        ("mlp", {"activation": "elu"}, "activation"),
        ("softmax", {"K": 1}, "2 <= K"),
        ("linear", {"H": 3}, "options"),
    ],
)
def test_bad_options(name, opts, fragment):
    with pytest.raises(UsageError, match=fragment):
        get_model(name, **opts)
