"""Our L-BFGS: torch's fixed-step algorithm step for step, with two host reads a step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from engine.lbfgs import LBFGS


class _ScalarReads(TorchDispatchMode):
    """Counts reads of a tensor's value by the host (``.item()``, ``float()``, ``if t:``, and
    tensors passed where a number is expected): each one is a device synchronisation on CUDA."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count host reads of tensor values (``tolist`` bypasses the dispatcher: counted apart)."""
    tolists = [0]
    original = torch.Tensor.tolist

    def tolist(self: Tensor) -> object:
        tolists[0] += 1
        return original(self)

    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    total = [0]
    with _ScalarReads() as mode:
        yield total
    total[0] = mode.count + tolists[0]
    monkeypatch.undo()


def problem(seed: int = 0) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """A smooth, non-quadratic objective over a 4-D 'canvas' (least squares plus a quartic)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(40, 48, generator=g, dtype=torch.float64)
    b = torch.randn(40, generator=g, dtype=torch.float64)
    x0 = torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64)

    def f(x: Tensor) -> Tensor:
        v = x.reshape(-1)
        return (a @ v - b).pow(2).sum() + 0.1 * v.pow(4).sum()

    return x0, f


def run_ours(x0: Tensor, f: Callable[[Tensor], Tensor], steps: int, history: int) -> Tensor:
    x = x0.clone().requires_grad_(True)

    def closure() -> Tensor:
        loss = f(x)
        loss.backward()
        return loss

    LBFGS(x, history_size=history, tolerance_grad=0.0, tolerance_change=1e-12).run(closure, steps)
    return x.detach()


def run_torch(x0: Tensor, f: Callable[[Tensor], Tensor], steps: int, history: int) -> Tensor:
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=steps,
        max_eval=steps,
        history_size=history,
        tolerance_grad=0.0,
        tolerance_change=1e-12,
        line_search_fn=None,
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        return loss

    opt.step(closure)
    return x.detach()


@pytest.mark.parametrize(("steps", "history"), [(1, 5), (2, 5), (25, 4), (25, 50)])
def test_follows_torchs_lbfgs_step_for_step(steps: int, history: int) -> None:
    # torch's stops after its last evaluation without moving; ours moves on that gradient too.
    x0, f = problem()
    ours, theirs = run_ours(x0, f, steps, history), run_torch(x0, f, steps + 1, history)
    assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    assert not torch.equal(ours, x0)
    if steps == 25:
        assert f(ours) < 0.5 * f(x0)


def test_counts_its_evaluations_and_stops_when_converged() -> None:
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)
    calls = [0]

    def closure() -> Tensor:
        calls[0] += 1
        loss = (x - 1).pow(2).sum()
        loss.backward()
        return loss

    # A quadratic with identity Hessian: the first (scaled) step and one L-BFGS step solve it.
    made = LBFGS(x, history_size=5, tolerance_grad=1e-9, tolerance_change=1e-12).run(closure, 20)
    assert made == calls[0] < 20
    assert torch.allclose(x.detach(), torch.ones(1, 1, 2, 2), atol=1e-5)


def test_reads_at_most_two_numbers_a_step_off_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    x0, f = problem()
    steps, history = 30, 50
    with host_reads(monkeypatch) as ours:
        run_ours(x0.float(), lambda x: f(x.double()).float(), steps, history)
    assert ours[0] <= 2 * steps + 1
    with host_reads(monkeypatch) as theirs:  # torch's: two per history pair and step, and more
        run_torch(x0.float(), lambda x: f(x.double()).float(), steps, history)
    assert theirs[0] > 10 * steps
