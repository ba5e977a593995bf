"""A test file of custom autograd Functions, as a PyTorch user writes it (docs/torch.md).

Run as is, it uses gradcheck_lab's drop-in; with the import line switched to
``from torch.autograd import gradcheck`` it runs PyTorch's (tests/test_torch_docs.py
runs it both ways and checks the transcripts in docs/torch.md).
"""

import pytest
import torch
from custom_functions import Exp, LayerNorm, LayerNormIgnoresEps, MatMul, Swish

from gradcheck_lab import gradcheck  # was: from torch.autograd import gradcheck

DTYPES = [torch.float64, torch.float32]


def rand(*shape, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(0)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_exp(dtype):
    assert gradcheck(Exp.apply, (rand(3, 4, dtype=dtype),))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_swish(dtype):
    assert gradcheck(Swish.apply, (rand(3, 4, dtype=dtype),))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_matmul(dtype):
    assert gradcheck(MatMul.apply, (rand(3, 3, dtype=dtype), rand(3, 3, dtype=dtype, scale=0.5)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_layernorm(dtype):
    assert gradcheck(LayerNorm.apply, (rand(2, 4, dtype=dtype),))


def test_relu_at_its_kink():
    x = torch.tensor([0.0, 1.5, -2.0], dtype=torch.float64, requires_grad=True)
    assert gradcheck(torch.relu, (x,))


def test_layernorm_backward_that_ignores_eps_is_caught():
    x = rand(2, 4, scale=2.0)  # rows of variance ~4: the bug is 1e-6 relative
    assert not gradcheck(LayerNormIgnoresEps.apply, (x,), raise_exception=False)
