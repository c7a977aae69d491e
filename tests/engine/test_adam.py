"""Our Adam: torch's algorithm step for step, per row of a batch, inside the picture's box."""

from __future__ import annotations

import torch
from torch import Tensor

from engine.adam import Adam

from .test_lbfgs import problem

BETAS = (0.8, 0.99)


def run_ours(x0: Tensor, steps: int, lr: float, active: list[bool] | None = None) -> Tensor:
    x = x0.clone().requires_grad_(True)
    opt = Adam(x, lr=lr, betas=BETAS)
    for n in range(steps):
        loss = sum(problem(i)[1](x[i : i + 1]) for i in range(x.shape[0]))
        assert isinstance(loss, Tensor)
        (grad,) = torch.autograd.grad(loss, x)
        opt.begin(loss.detach(), grad) if n == 0 else opt.observe(loss.detach(), grad)
        if active is not None:
            opt.active.copy_(torch.tensor(active))
        opt.move()
    return x.detach()


def run_torch(x0: Tensor, steps: int, lr: float) -> Tensor:
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr, betas=BETAS)
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(problem(i)[1](x[i : i + 1]) for i in range(x.shape[0]))
        assert isinstance(loss, Tensor)
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    return x.detach()


def start() -> Tensor:
    # Two rows in [0, 1], as canvases are.
    return torch.cat([problem(0)[0], problem(1)[0]]).sigmoid()


def test_follows_torchs_adam_with_the_box_constraint() -> None:
    ours, theirs = run_ours(start(), 20, 0.05), run_torch(start(), 20, 0.05)
    assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    assert ours.min() >= 0 and ours.max() <= 1
    assert not torch.equal(ours, start())


def test_a_stopped_row_stays_where_it_is() -> None:
    x0 = start()
    moved = run_ours(x0, 5, 0.05, active=[True, False])
    assert torch.equal(moved[1], x0[1].clamp(0, 1))
    assert not torch.equal(moved[0], x0[0])
