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


def batched(
    problems: list[tuple[Tensor, Callable[[Tensor], Tensor]]],
) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Several problems as the rows of one batch: the objective is (B,), one value per row."""
    x0 = torch.cat([x for x, _ in problems])

    def f(x: Tensor) -> Tensor:
        return torch.stack([fn(x[i : i + 1]) for i, (_, fn) in enumerate(problems)])

    return x0, f


def run_batch(x0: Tensor, f: Callable[[Tensor], Tensor], steps: int, history: int) -> Tensor:
    x = x0.clone().requires_grad_(True)

    def closure() -> Tensor:
        loss = f(x)
        loss.sum().backward()
        return loss

    LBFGS(x, history_size=history, tolerance_grad=0.0, tolerance_change=1e-12).run(closure, steps)
    return x.detach()


def test_the_rows_of_a_batch_are_painted_as_if_alone() -> None:
    # Three different problems in one batch: each row takes exactly the steps it takes alone
    # (its own history, step length, curvature test), here through the ring's wrap-around.
    problems = [problem(seed) for seed in (0, 1, 2)]
    x0, f = batched(problems)
    together = run_batch(x0, f, 25, 4)
    for i, (x, fn) in enumerate(problems):
        alone = run_ours(x, fn, 25, 4)
        assert torch.allclose(together[i : i + 1], alone, rtol=1e-9, atol=1e-12)


def test_a_converged_row_stops_while_the_others_go_on() -> None:
    # Row 0: a quadratic with identity Hessian, solved in two moves; row 1 needs many more.
    x0, hard = problem(3)
    quadratic = x0.new_zeros(x0.shape)

    def f(x: Tensor) -> Tensor:
        return torch.stack([(x[0] - 1).pow(2).sum(), hard(x[1:2])])

    x = torch.cat([quadratic, x0]).requires_grad_(True)
    opt = LBFGS(x, history_size=5, tolerance_grad=1e-9, tolerance_change=1e-12)
    rows_active = []

    def closure() -> Tensor:
        loss = f(x)
        loss.sum().backward()
        return loss

    opt.begin(*_evaluate(x, closure))
    for _ in range(12):
        opt.move()
        opt.observe(*_evaluate(x, closure))
        rows_active.append(opt.active.tolist())
    assert rows_active[-1] == [False, True]
    assert torch.allclose(x.detach()[0], torch.ones_like(x0[0]), atol=1e-5)
    assert hard(x.detach()[1:2]) < 0.5 * hard(x0)


def _evaluate(x: Tensor, closure: Callable[[], Tensor]) -> tuple[Tensor, Tensor]:
    x.grad = None
    loss = closure()
    assert x.grad is not None
    return loss.detach(), x.grad


def test_an_iteration_reads_nothing_and_keeps_its_tensors_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What replaying an iteration as a CUDA graph needs: no host reads (a capture would fail on
    # one) and every state tensor at the same address (a replay writes to the recorded ones).
    x0, f = batched([problem(0), problem(1)])
    x = x0.float().clone().requires_grad_(True)

    def g(v: Tensor) -> Tensor:
        return f(v.double()).float()

    opt = LBFGS(x, history_size=3)
    state = [opt.g, opt.d, opt.loss, opt.t, opt.h_diag, opt.history, opt.sy, opt.yy]
    state += [opt.projected, opt.stamp, opt.count, opt.active]
    addresses = [t.data_ptr() for t in state]
    loss = g(x)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    opt.begin(loss.detach(), grad)
    for _ in range(6):  # past the ring's wrap-around
        opt.move()
        loss = g(x)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        with host_reads(monkeypatch) as reads:
            opt.observe(loss.detach(), grad)
            opt.move()
        assert reads[0] == 0
    assert [t.data_ptr() for t in state] == addresses
    assert g(x.detach()).sum() < 0.5 * g(x0.float()).sum()
