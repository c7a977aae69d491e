"""Adam for a batch of canvases, with the same step-level API as ``lbfgs.LBFGS``.

Adam (Kingma and Ba, 2015) as torch has it (eps 1e-8, no weight decay; our default betas are
``paint_settings.ADAM_BETAS``), written out so that it fits the painting loop: state kept on
the device at fixed addresses (an iteration can be replayed as a CUDA graph), a per-row
:attr:`active` flag (a cancelled canvas in a batch stops moving) and the box constraint of a
picture (pixels are clamped to [0, 1] after each move; L-BFGS uses a penalty instead, see
``workspace.py``). It keeps two canvases of state where L-BFGS keeps 2m, and it is the CPU
draft preset's optimiser: from the recoloured photo it needs far fewer iterations there.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-8


class Adam:
    """Minimise B objectives over the rows of ``param`` (B, ...): ``begin``, then ``move`` and
    ``observe`` after each further evaluation (see ``lbfgs.LBFGS``)."""

    def __init__(self, param: Tensor, *, lr: float, betas: tuple[float, float]) -> None:
        if not param.is_contiguous():
            raise ValueError("the parameter must be contiguous")
        self.param = param
        self.lr = lr
        self.betas = betas
        b = param.shape[0]
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = torch.zeros((), device=param.device, dtype=param.dtype)
        self.active = torch.ones(b, device=param.device, dtype=torch.bool)

    def begin(self, loss: Tensor, grad: Tensor) -> None:
        self.exp_avg.zero_()
        self.exp_avg_sq.zero_()
        self.steps.zero_()
        self.active.fill_(True)
        self.observe(loss, grad)

    def observe(self, loss: Tensor, grad: Tensor) -> None:
        beta1, beta2 = self.betas
        self.steps.add_(1)
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

    def move(self) -> None:
        beta1, beta2 = self.betas
        correction1 = 1 - beta1**self.steps
        correction2 = 1 - beta2**self.steps
        denominator = (self.exp_avg_sq.sqrt() / correction2.sqrt()).add_(EPS)
        step = self.exp_avg / denominator * (self.lr / correction1)
        shape = (-1,) + (1,) * (self.param.dim() - 1)
        with torch.no_grad():
            self.param.sub_(step * self.active.view(shape)).clamp_(0, 1)
