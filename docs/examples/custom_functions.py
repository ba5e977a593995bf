"""Custom ``torch.autograd.Function``s used by docs/torch.md and the tests, correct and buggy.

``LinearFunction`` and ``MulConstant`` are PyTorch's "Extending PyTorch" note
examples, ``Exp`` the ``torch.autograd.Function`` docstring's, verbatim in
their math; ``Swish``, ``Softplus``, ``LayerNorm`` and ``MatMul`` are ours.
Each ``Buggy*`` class carries one classic back-propagation bug.
"""

import torch
from torch.autograd import Function


class LinearFunction(Function):
    """y = x W^T + b (Extending PyTorch)."""

    @staticmethod
    def forward(ctx, input, weight, bias=None):
        ctx.save_for_backward(input, weight, bias)
        output = input.mm(weight.t())
        if bias is not None:
            output += bias.unsqueeze(0).expand_as(output)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        input, weight, bias = ctx.saved_tensors
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = grad_output.mm(weight)
        if ctx.needs_input_grad[1]:
            grad_weight = grad_output.t().mm(input)
        if bias is not None and ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum(0)
        return grad_input, grad_weight, grad_bias


class MulConstant(Function):
    """y = c x with a Python constant c (Extending PyTorch)."""

    @staticmethod
    def forward(ctx, tensor, constant):
        ctx.constant = constant
        return tensor * constant

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * ctx.constant, None


class Exp(Function):
    """y = exp(x) (the torch.autograd.Function docstring)."""

    @staticmethod
    def forward(ctx, i):
        result = i.exp()
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad_output):
        (result,) = ctx.saved_tensors
        return grad_output * result


class Swish(Function):
    """y = x sigmoid(x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * (s + x * s * (1 - s))


class Softplus(Function):
    """y = log(1 + exp(x))."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        # The exact softplus, stable for any x. (torch.nn.functional.softplus returns x itself above
        # its threshold of 20, whose gradient is exactly 1, not sigmoid(x): see ThresholdSoftplus.)
        return x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x)


class ThresholdSoftplus(Function):
    """Bug: the forward is torch's softplus (x itself above 20), the backward the smooth sigmoid(x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x)  # off by exp(-x) ~ 2e-9 where x > 20, where the forward is x


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) over the last dim (no affine)."""

    @staticmethod
    def forward(ctx, x, eps=1e-5):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        rstd = 1 / torch.sqrt(var + eps)
        xhat = (x - mu) * rstd
        ctx.save_for_backward(xhat, rstd)
        return xhat

    @staticmethod
    def backward(ctx, g):
        xhat, rstd = ctx.saved_tensors
        dx = rstd * (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True))
        return dx, None


class MatMul(Function):
    """y = a @ b."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g @ b.t(), a.t() @ g


# ---------------------------------------------------------------- buggy backwards


class BuggySwish(Swish):
    """Missing factor: the chain rule's (1 - s) is dropped."""

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * (s + x * s)


class BuggyMatMul(MatMul):
    """Transposed product: g @ b instead of g @ b^T (runs on square shapes)."""

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g @ b, a.t() @ g


class LayerNormNoVarianceTerm(LayerNorm):
    """Dropped variance term: the xhat * mean(g xhat) part of the gradient is missing."""

    @staticmethod
    def backward(ctx, g):
        xhat, rstd = ctx.saved_tensors
        return rstd * (g - g.mean(-1, keepdim=True)), None


class LayerNormIgnoresEps(Function):
    """The backward recomputes 1/std without eps: about 9e-6 relative off for unit-variance rows."""

    @staticmethod
    def forward(ctx, x, eps=1e-5):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        ctx.save_for_backward(x)
        return (x - mu) / torch.sqrt(var + eps)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        mu = x.mean(-1, keepdim=True)
        rstd = 1 / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True))  # eps forgotten
        xhat = (x - mu) * rstd
        return rstd * (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True)), None


class StraightThroughClamp(Function):
    """Deliberately not the gradient: clamp to [-1, 1] forward, identity backward (straight-through)."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(-1, 1)

    @staticmethod
    def backward(ctx, g):
        return g


class DetachedSquare(Function):
    """x**2 with a backward right to first order but not differentiable: the saved x is detached."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * g * x.detach()


class Square(Function):
    """x**2, differentiable backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * g * x
