"""L-BFGS with a fixed step (no line search) for a batch of independent problems, on the device.

Each row of the parameter (a batch of canvases, shape (B, ...)) is its own problem with its own
history, step length, curvature test and stopping tests: the rows never mix, so a canvas painted
in a batch takes the same steps as painted alone. Per row, the algorithm is torch's
``torch.optim.LBFGS(line_search_fn=None)`` step for step: the same pairs kept (those with
``yᵀs > 1e-10``), the same first step ``min(1, 1/|g|₁)·lr``, the same stopping tests.

What differs is how the direction ``d = -H g`` is computed, and where the numbers live:

* The compact representation (Byrd, Nocedal and Schnabel 1994; Nocedal and Wright eq. 7.24)
  instead of the two-loop recursion. The two give the same ``H``; the two-loop walks the history
  pair by pair (about 300 small kernels a step with 50 pairs, which on a GPU took longer than the
  VGG pass itself at the coarse scales), the compact form reads the history twice in two batched
  matrix products and solves two (m, m) triangular systems.
* The history is a fixed-size ring (B, 2m, N) of s and y vectors with the small matrices SᵀY and
  YᵀY kept up to date. Every tensor keeps its shape and address for the whole scale, and nothing
  is read by the host: an iteration (evaluate, :meth:`observe`, :meth:`move`) can be captured as
  one CUDA graph and replayed (see ``step_graph.py``).
* Stopping is a per-row flag (:attr:`active`) on the device: a row that converged (or whose
  direction stopped descending) no longer moves. The host reads the flags only when it wants to
  (``run`` does once a step; the painting loop less often on a GPU).

Matrix products here run in full float32 even where TF32 is allowed for the network: the
curvature pairs' inner products decide the whole Hessian model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

CURVATURE_MIN = 1e-10  # torch's threshold for keeping a curvature pair


@contextlib.contextmanager
def full_precision_matmul() -> Iterator[None]:
    """Matrix products in IEEE float32 within the block (no TF32), whatever the global flag."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


class LBFGS:
    """Minimise B independent objectives over the rows of ``param`` (B, ...), in place.

    The step-level API, for loops that evaluate the objective themselves::

        opt.begin(loss, grad)          # the first evaluation of this parameter
        for each further evaluation:
            opt.move()                 # x += t·d for the rows still active
            opt.observe(loss, grad)    # stopping tests, history, next direction

    ``loss`` is (B,), ``grad`` has ``param``'s shape. :meth:`run` is the simple loop around a
    closure. Each evaluation is followed by a move, the last one included: torch's LBFGS with
    ``max_iter = max_eval = n`` stops right after its n-th evaluation and leaves that gradient
    unused, so n evaluations here go as far as n + 1 there, at the same cost.
    """

    def __init__(
        self,
        param: Tensor,
        *,
        history_size: int = 100,
        lr: float = 1.0,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
    ) -> None:
        if not param.requires_grad:
            raise ValueError("the parameter must require grad")
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        if not param.is_contiguous():
            raise ValueError("the parameter must be contiguous (it is moved through a flat view)")
        self.param = param
        self.history_size = m = history_size
        self.lr = lr
        self.tolerance_grad = tolerance_grad
        self.tolerance_change = tolerance_change
        b, n = param.shape[0], param[0].numel()
        device, dtype = param.device, param.dtype
        self.g = torch.zeros(b, n, device=device, dtype=dtype)  # gradient at the current point
        self.d = torch.zeros(b, n, device=device, dtype=dtype)  # direction of the next move
        self.loss = torch.zeros(b, device=device, dtype=dtype)
        self.t = torch.zeros(b, device=device, dtype=dtype)  # step length of the next move
        self.h_diag = torch.ones(b, device=device, dtype=dtype)  # γ = yᵀs / yᵀy: H₀ = γI
        # Rows :m are the s vectors (steps), rows m: the y vectors (gradient changes).
        self.history = torch.zeros(b, 2 * m, n, device=device, dtype=dtype)
        self.sy = torch.zeros(b, m, m, device=device, dtype=dtype)  # [i, j] = s_iᵀ y_j
        self.yy = torch.zeros(b, m, m, device=device, dtype=dtype)  # [i, j] = y_iᵀ y_j
        self.projected = torch.zeros(b, 2 * m, device=device, dtype=dtype)  # Sᵀg, Yᵀg
        self.eye = torch.eye(m, device=device, dtype=dtype)
        self.stamp = torch.full((b, m), -1, device=param.device, dtype=torch.long)  # -1: empty
        self.count = torch.zeros(b, device=param.device, dtype=torch.long)  # pairs kept
        self.active = torch.ones(b, device=param.device, dtype=torch.bool)
        self._rows = torch.arange(b, device=param.device)

    # -- the step-level API -------------------------------------------------------------------

    def begin(self, loss: Tensor, grad: Tensor) -> None:
        """Start from the first evaluation: empty history, first step ``min(1, 1/|g|₁)·lr``."""
        g = grad.reshape(self.g.shape).to(self.g.dtype)
        self.g.copy_(g)
        self.loss.copy_(loss.detach().reshape(-1))
        self.history.zero_()
        self.sy.zero_()
        self.yy.zero_()
        self.projected.zero_()
        self.stamp.fill_(-1)
        self.count.zero_()
        self.h_diag.fill_(1.0)
        abs_g = g.abs()
        self.active.copy_(abs_g.amax(dim=1) > self.tolerance_grad)
        self.t.copy_(abs_g.sum(dim=1).reciprocal().clamp(max=1.0) * self.lr)
        self._direction()

    def move(self) -> None:
        """``x += t·d`` for every row still active."""
        step = (self.t * self.active).unsqueeze(1)
        with torch.no_grad():
            self.param.view(self.d.shape).addcmul_(self.d, step)

    def observe(self, loss: Tensor, grad: Tensor) -> None:
        """Take the evaluation after a move: stopping tests, the new pair, the next direction."""
        g = grad.reshape(self.g.shape).to(self.g.dtype)
        loss = loss.detach().reshape(-1).to(self.loss.dtype)
        y = g - self.g
        s = self.d * (self.t * self.active).unsqueeze(1)
        with full_precision_matmul():
            ys = _rowdot(y, s)
        stop = (
            (g.abs().amax(dim=1) <= self.tolerance_grad)
            | (s.abs().amax(dim=1) <= self.tolerance_change)
            | ((loss - self.loss).abs() < self.tolerance_change)
        )
        self.active.logical_and_(~stop)
        keep = self.active & (ys > CURVATURE_MIN)
        self._remember(keep, s, y, g, ys)
        self.t.fill_(self.lr)
        self.g.copy_(g)
        self.loss.copy_(loss)
        self._direction()

    # -- inside -------------------------------------------------------------------------------

    def _remember(self, keep: Tensor, s: Tensor, y: Tensor, g: Tensor, ys: Tensor) -> None:
        """Store (s, y) in each keeping row's next slot; refresh SᵀY, YᵀY, Sᵀg and Yᵀg.

        One batched product reads the history once for all five: with the new pair in place,
        ``[S; Y] · [g, y, s]`` gives Sᵀg and Yᵀg (for the direction), Sᵀy and Yᵀs (the new
        column and row of SᵀY) and Yᵀy (the new row and column of YᵀY).
        """
        m, rows = self.history_size, self._rows
        slot = self.count % m  # (B,) the oldest pair is overwritten once the ring is full
        k = keep.unsqueeze(1)
        self.history[rows, slot] = torch.where(k, s, self.history[rows, slot])
        self.history[rows, slot + m] = torch.where(k, y, self.history[rows, slot + m])
        with full_precision_matmul():
            out = torch.bmm(self.history, torch.stack([g, y, s], dim=2))  # (B, 2m, 3)
        self.projected.copy_(out[:, :, 0])
        column = torch.where(k, out[:, :m, 1], self.sy[rows, :, slot])  # s_iᵀ y_new
        self.sy[rows, :, slot] = column
        row = torch.where(k, out[:, m:, 2], self.sy[rows, slot, :])  # s_newᵀ y_j
        self.sy[rows, slot, :] = row
        yy = torch.where(k, out[:, m:, 1], self.yy[rows, slot, :])  # y_newᵀ y_j
        self.yy[rows, slot, :] = yy
        self.yy[rows, :, slot] = yy
        self.stamp[rows, slot] = torch.where(keep, self.count, self.stamp[rows, slot])
        yy_new = out[rows, slot + m, 1]  # y_newᵀ y_new where kept
        self.h_diag.copy_(torch.where(keep, ys / yy_new.where(keep, 1.0), self.h_diag))
        self.count.add_(keep.long())

    def _direction(self) -> None:
        """``d = -H g`` by the compact representation, and the descent test on it.

        With the pairs in the order they were made, R = triu(SᵀY), D = diag(R), γ = h_diag::

            H g = γ g + S p + Y q,  u = R⁻¹ Sᵀg,  p = R⁻ᵀ((D + γ YᵀY) u - γ Yᵀg),  q = -γ u

        Empty slots get a unit diagonal and zero rows, so they contribute nothing.
        """
        m, rows = self.history_size, self.stamp.shape[0]
        order = torch.argsort(self.stamp, dim=1)  # (B, m): empty slots first, then oldest first
        valid = self.stamp.gather(1, order) >= 0
        both = valid.unsqueeze(2) & valid.unsqueeze(1)
        sy = _permute(self.sy, order)
        yy = _permute(self.yy, order)
        a = self.projected[:, :m].gather(1, order).unsqueeze(2) * valid.unsqueeze(2)  # Sᵀg
        b = self.projected[:, m:].gather(1, order).unsqueeze(2) * valid.unsqueeze(2)  # Yᵀg
        eye = self.eye.expand(rows, m, m)
        r = torch.where(both, sy.triu(), 0.0) + eye * (~valid).unsqueeze(2)
        gamma = self.h_diag.view(-1, 1, 1)
        dd = torch.diagonal(r, dim1=1, dim2=2) * valid
        u = torch.linalg.solve_triangular(r, a, upper=True)
        v = dd.unsqueeze(2) * u + gamma * torch.bmm(torch.where(both, yy, 0.0), u) - gamma * b
        p = torch.linalg.solve_triangular(r.transpose(1, 2), v, upper=False)
        q = -gamma * u
        coeffs = torch.zeros_like(self.projected)
        coeffs[:, :m].scatter_(1, order, (p.squeeze(2) * valid))
        coeffs[:, m:].scatter_(1, order, (q.squeeze(2) * valid))
        with full_precision_matmul():
            hg = torch.bmm(self.history.transpose(1, 2), coeffs.unsqueeze(2)).squeeze(2)
            self.d.copy_(-(self.h_diag.unsqueeze(1) * self.g + hg))
            gtd = _rowdot(self.g, self.d)
        self.active.logical_and_(~(gtd > -self.tolerance_change))

    # -- the simple loop ------------------------------------------------------------------------

    def run(self, closure: Callable[[], Tensor], max_evals: int) -> int:
        """At most ``max_evals`` evaluations of ``closure`` (which returns the loss, (B,) or a
        scalar for one row, and fills ``param.grad``); returns how many it made. Fewer means
        every row converged (or could not descend) first. One host read a step."""
        loss, grad = self._evaluate(closure)
        self.begin(loss, grad)
        evals = 1
        for n_iter in range(1, max_evals + 1):
            if not bool(self.active.any()):
                break
            self.move()
            if n_iter == max_evals:
                break
            loss, grad = self._evaluate(closure)
            evals += 1
            self.observe(loss, grad)
        return evals

    def _evaluate(self, closure: Callable[[], Tensor]) -> tuple[Tensor, Tensor]:
        self.param.grad = None
        with torch.enable_grad():
            loss = closure()
        grad = self.param.grad
        if grad is None:
            raise RuntimeError("the closure did not compute a gradient")
        return loss.detach(), grad


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise dot products of two (B, N) tensors -> (B,), as one batched product."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _permute(x: Tensor, order: Tensor) -> Tensor:
    """Rows and columns of (B, m, m) ``x`` in the order ``order`` (B, m)."""
    m = order.shape[1]
    rows = x.gather(1, order.unsqueeze(2).expand(-1, m, m))
    return rows.gather(2, order.unsqueeze(1).expand(-1, m, m))
