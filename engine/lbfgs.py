"""L-BFGS with a fixed step (no line search) that reads only two numbers a step off the device.

The algorithm is torch's ``torch.optim.LBFGS(line_search_fn=None)``, step for step: the same
two-loop recursion, the same curvature test (pairs with ``yᵀs <= 1e-10`` are skipped), the same
first step ``min(1, 1/|g|₁)·lr``, the same stopping tests. What differs is where the scalars live.
torch's version turns every two-loop coefficient into a Python number (``alpha=-al[i]``), which on
CUDA is a host synchronisation: with a history of 50 that is about 100 round trips a step, plus
five more for its tests. At the sizes where a step takes a few milliseconds on a GPU (the coarse
scales, where most steps are spent), those round trips took longer than the step itself. Here the
coefficients stay on the device (``addcmul_`` with a 0-dim tensor), and the numbers the decisions
need are read together: once after each evaluation (loss, max |g|, yᵀs, yᵀy, max |s|) and once
for the directional derivative before moving.

Only one parameter (the canvas) is supported; it is optimised in place.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

CURVATURE_MIN = 1e-10  # torch's threshold for keeping a curvature pair


class LBFGS:
    """Minimise ``closure()`` over ``param``; ``closure`` returns the loss and fills ``param.grad``.

    ``run(closure, max_evals)`` makes at most ``max_evals`` evaluations and returns how many it
    made; fewer means it converged (or could not descend) first. Each evaluation is followed by a
    move, the last one included: torch's LBFGS with ``max_iter = max_eval = n`` stops right after
    its n-th evaluation and leaves that gradient unused, so n evaluations here go as far as n + 1
    there, at the same cost.
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
        self.param = param
        self.history_size = history_size
        self.lr = lr
        self.tolerance_grad = tolerance_grad
        self.tolerance_change = tolerance_change

    def _evaluate(self, closure: Callable[[], Tensor]) -> tuple[Tensor, Tensor]:
        self.param.grad = None  # a fresh gradient tensor each time: old ones stay valid
        with torch.enable_grad():
            loss = closure()
        grad = self.param.grad
        if grad is None:
            raise RuntimeError("the closure did not compute a gradient")
        return loss.detach(), grad.reshape(-1)

    def run(self, closure: Callable[[], Tensor], max_evals: int) -> int:
        p = self.param
        loss_t, g = self._evaluate(closure)
        evals = 1
        loss, g_max, g_sum = torch.stack([loss_t.float(), g.abs().max(), g.abs().sum()]).tolist()
        if g_max <= self.tolerance_grad:
            return evals
        old_y: list[Tensor] = []  # gradient differences
        old_s: list[Tensor] = []  # steps
        rho: list[float] = []  # 1 / yᵀs
        h_diag = 1.0
        d = g.neg()
        t = min(1.0, 1.0 / g_sum) * self.lr
        for n_iter in range(1, max_evals + 1):
            if n_iter > 1:
                # The two-loop recursion: d = -H g, coefficients kept on the device.
                q = g.neg()
                alphas: list[Tensor] = [q] * len(old_s)  # placeholders, all overwritten
                for i in range(len(old_s) - 1, -1, -1):
                    alphas[i] = old_s[i].dot(q) * rho[i]
                    q.addcmul_(old_y[i], alphas[i], value=-1.0)
                d = r = q.mul_(h_diag)
                for i in range(len(old_s)):
                    beta = old_y[i].dot(r) * rho[i]
                    r.addcmul_(old_s[i], alphas[i] - beta)
            gtd = float(g.dot(d))  # the second read: is d a descent direction?
            if gtd > -self.tolerance_change:
                break
            with torch.no_grad():
                p.add_(d.view_as(p), alpha=t)
            if n_iter == max_evals:
                break  # the last move: no evaluation after it
            prev_loss, prev_g = loss, g
            loss_t, g = self._evaluate(closure)
            evals += 1
            y = g - prev_g
            s = d.mul(t)
            loss, g_max, ys, yy, s_max = torch.stack(
                [loss_t.float(), g.abs().max(), y.dot(s), y.dot(y), s.abs().max()]
            ).tolist()
            if g_max <= self.tolerance_grad or s_max <= self.tolerance_change:
                break
            if abs(loss - prev_loss) < self.tolerance_change:
                break
            if ys > CURVATURE_MIN:
                if len(old_s) == self.history_size:
                    old_y.pop(0)
                    old_s.pop(0)
                    rho.pop(0)
                old_y.append(y)
                old_s.append(s)
                rho.append(1.0 / ys)
                h_diag = ys / yy
            t = self.lr
        return evals
