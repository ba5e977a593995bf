"""Autograd engine: torch records its own graph of the model and back-propagates.

The model's function runs on the torch backend with the batch's parameters as
one leaf tensor ``theta`` of shape ``(N, P)``; every component is a column
view, so torch differentiates the model itself, never SymPy's derivative.
Points are independent, so ``loss.sum().backward()`` fills ``theta.grad``
with every point's gradient in one pass.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from ..model import Batch, Model
from ..ops import backend
from . import Gradients

__all__ = ["gradients", "DTYPES"]

DTYPES = ("float64", "float32")


def _device(device: str):
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"Expected a CUDA device for --device {device} but torch {torch.__version__} sees none; "
            "use --device cpu or install a CUDA build of torch (see README)."
        )
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"Expected a torch device such as cpu or cuda but got {device!r}.") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(
            f"Expected a CUDA device index below {torch.cuda.device_count()} but got {device!r}; "
            "use --device cuda for the first GPU."
        )
    return dev


def gradients(model: Model, batch: Batch, *, dtype: str = "float64", device: str = "cpu") -> Gradients:
    """torch autograd's gradient of the loss at every point of ``batch``."""
    import torch

    if dtype not in DTYPES:
        raise UsageError(f"Expected dtype in {DTYPES} but got {dtype!r}.")
    dt = getattr(torch, dtype)
    dev = _device(device)
    theta = torch.tensor(batch.theta, dtype=dt, device=dev, requires_grad=True)
    data = torch.tensor(batch.data, dtype=dt, device=dev)
    # unbind: one backward node stacks every column's gradient, O(N P); indexing
    # theta[:, i] per column costs a (N, P) scatter each, O(N P^2) (7x slower at P = 193).
    theta_cols, data_cols = theta.unbind(1), data.unbind(1)
    loss = model.loss(backend("torch"), theta_cols.__getitem__, data_cols.__getitem__)
    if isinstance(loss, torch.Tensor) and loss.requires_grad:
        loss.sum().backward()
    grad = theta.grad if theta.grad is not None else torch.zeros_like(theta)
    return Gradients("autograd", grad.detach().to("cpu", torch.float64).numpy().astype(np.float64), dtype=dtype)
