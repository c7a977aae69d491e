"""Replaying a scale's fixed-shape iteration as a CUDA graph.

An iteration of the painting loop launches a few hundred kernels (VGG forward and backward, the
losses, the optimiser); at the coarse scales, where most iterations are spent, launching them
takes longer than running them. A CUDA graph records the launches once and replays them with one
call. That needs an iteration that keeps every tensor at the same address and never waits for
the device (``workspace.Workspace.step`` is written so), and a few eager iterations first, so
that cuDNN's autotuning and the libraries' lazy set-up happen outside the recording.

Graphs are captured lazily, one per workspace (one per shape: batch size and size bucket), when
a scale first needs it, never for every size at start; a workspace keeps its graph for the next
batch of its shape. The recording is behind :class:`Recorder`, so the logic here runs on CPU in
tests with a recorder that checks what a CUDA graph would need (fixed addresses, no host reads).
If recording fails, the workspace goes on eagerly and says so once in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Protocol

import torch

log = logging.getLogger(__name__)

Step = Callable[[], None]

WARMUP_STEPS: Final = 2  # eager iterations before the recording (cuDNN autotuning, lazy set-up)
MIN_REMAINING: Final = 4  # record only when at least this many iterations are left to replay


class Recorder(Protocol):
    """Records a step once and returns a function that replays it."""

    def warm(self, step: Step) -> None:
        """Run ``step`` eagerly, the way the recording needs its warm-up iterations run."""

    def record(self, step: Step) -> Step:
        """Record ``step`` (without running it) and return its replay."""


class CudaGraphs:
    """The CUDA recorder: warm-up on a side stream, then ``torch.cuda.graph`` (as torch's
    documentation of whole-network capture does)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def warm(self, step: Step) -> None:
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            step()
        torch.cuda.current_stream(self.device).wait_stream(self.stream)

    def record(self, step: Step) -> Step:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        replay: Step = graph.replay
        return replay


class Runner:
    """Runs a workspace's further iterations: eagerly, or (with a recorder) warm-up, record once,
    then replay. ``remaining`` tells each call how many iterations of the scale are left,
    this one included, so that a graph is recorded only where it pays off."""

    def __init__(self, step: Step, recorder: Recorder | None) -> None:
        self.step = step
        self.recorder = recorder
        self.replay: Step | None = None
        self.warm_left = WARMUP_STEPS
        self.recorded = 0  # how many times a graph was recorded (once per workspace)

    def __call__(self, remaining: int = MIN_REMAINING) -> None:
        if self.replay is not None:
            self.replay()
            return
        if self.recorder is None:
            self.step()
            return
        if self.warm_left > 0 or remaining < MIN_REMAINING:
            self.recorder.warm(self.step)
            self.warm_left = max(0, self.warm_left - 1)
            return
        try:
            replay = self.recorder.record(self.step)
        except Exception:
            log.warning(
                "recording the iteration as a graph failed; going on eagerly", exc_info=True
            )
            self.recorder = None
            self.step()
            return
        self.recorded += 1
        self.replay = replay
        replay()
