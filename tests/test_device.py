"""Autograd on a CUDA device (skipped where torch sees none; run on a GPU machine)."""

import pytest
import torch

from gradcheck_lab import UsageError, verify

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda
@pytest.mark.parametrize("name", ["quadratic", "logistic", "mlp", "softmax"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_engines_agree_on_cuda(name, dtype):
    rep = verify(name, random=2000, device="cuda", dtype=dtype)
    assert rep.ok, rep.message
    assert rep.device == "cuda"


@cuda
def test_candidate_on_cuda():
    from gradcheck_lab.candidates import torch_loss

    cand = torch_loss(lambda p, v: (p.w1 * v.x**2 + p.w2 * v.x + p.b - v.y) ** 2)
    assert verify("quadratic", candidate=cand, random=200, device="cuda").ok


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_gpu_is_a_usage_error():
    with pytest.raises(UsageError, match="sees none"):
        verify("quadratic", random=5, device="cuda")


@cuda
def test_module_candidate_on_cuda():
    class Quad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = torch.nn.Parameter(torch.tensor(1.0))
            self.w2 = torch.nn.Parameter(torch.tensor(1.0))
            self.b = torch.nn.Parameter(torch.tensor(1.0))

        def forward(self, x, y):
            return (self.w1 * x**2 + self.w2 * x + self.b - y) ** 2

    assert verify("quadratic", candidate=Quad(), random=100, device="cuda").ok
    assert verify("quadratic", candidate=Quad(), random=100, device="cuda", dtype="float32").ok


@cuda
def test_relu_mlp_on_cuda_float32():
    assert verify("mlp", activation="relu", random=5000, device="cuda", dtype="float32").ok
