"""Graph replay of a scale's iteration, driven on CPU through the recorder seam."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from PIL import Image
from torch import Tensor

from engine import step_graph
from engine.paint_settings import PaintSettings
from engine.step_graph import Runner, Step
from engine.stylize import Commission, Stylist
from engine.workspace import Workspace

from ..conftest import make_painting, make_photo
from .test_lbfgs import host_reads

SETTINGS = PaintSettings(long_side=128, steps=(8, 7), tv_weight=0.0, preview_every=0.0, seed=0)


def workspace_tensors(workspace: Workspace) -> list[Tensor]:
    """Every tensor a workspace iteration may touch."""
    found: list[Tensor] = []
    for owner in (workspace, workspace.optimiser):
        found += [v for v in vars(owner).values() if isinstance(v, Tensor)]
    found += [*workspace.terms.values(), *workspace.weights.values()]
    if workspace.targets is not None:
        found += [workspace.targets.content, *workspace.targets.grams.values()]
    if workspace.region is not None:
        found += list(workspace.region.tensors())
    return found


class StrictRecorder:
    """Stands in for CUDA graphs and holds each replay to what a graph needs: every tensor of
    the workspace at the address it had when recorded, and no host reads (a capture fails on
    one). Like a CUDA capture, recording does not run the step."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.warmed = self.recorded = self.replayed = 0

    def warm(self, step: Step) -> None:
        self.warmed += 1
        step()

    def record(self, step: Step) -> Step:
        self.recorded += 1
        workspace = getattr(step, "__self__", None)
        assert isinstance(workspace, Workspace)
        addresses = [t.data_ptr() for t in workspace_tensors(workspace)]

        def replay() -> None:
            with host_reads(self.monkeypatch) as reads:
                step()
            assert reads[0] == 0, "an iteration read a value off the device"
            assert [t.data_ptr() for t in workspace_tensors(workspace)] == addresses
            self.replayed += 1

        return replay


def commissions() -> list[Commission]:
    return [
        Commission(make_photo(128, 96), make_painting(), SETTINGS),
        Commission(make_photo(96, 128), make_painting(seed=9), SETTINGS.replace(keep_colors=True)),
    ]


def test_iterations_replayed_from_a_graph_paint_what_eager_ones_do(
    vgg_state: dict[str, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = StrictRecorder(monkeypatch)
    graphed = Stylist(weights=vgg_state, device="cpu", graphs=True, make_recorder=lambda: recorder)
    eager = Stylist(weights=vgg_state, device="cpu")
    assert recorder.recorded == 0  # nothing is recorded at start
    first = graphed.paint_batch(commissions())
    # Recorded lazily, once per shape (the batch of two at 64 and at 128 px), after two
    # warm-up iterations; the rest of each scale replayed.
    assert recorder.recorded == 2
    assert recorder.warmed == 4
    assert recorder.replayed == (8 - 3) + (7 - 3)
    expected = eager.paint_batch(commissions())
    for got, want in zip(first, expected, strict=True):
        assert isinstance(got, Image.Image) and isinstance(want, Image.Image)
        assert got.tobytes() == want.tobytes()
    # The next batch of the same shapes loads into the same workspaces and replays at once.
    again = graphed.paint_batch(commissions())
    assert recorder.recorded == 2
    assert recorder.replayed == (8 - 3) + (7 - 3) + (8 - 1) + (7 - 1)
    assert [a.tobytes() for a in again if isinstance(a, Image.Image)] == [
        w.tobytes() for w in expected if isinstance(w, Image.Image)
    ]


class CountingRecorder:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[str] = []

    def warm(self, step: Step) -> None:
        self.calls.append("warm")
        step()

    def record(self, step: Step) -> Step:
        self.calls.append("record")
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")

        def replay() -> None:
            self.calls.append("replay")
            step()

        return replay


def run(runner: Runner, remaining: list[int]) -> None:
    for left in remaining:
        runner(left)


def counter() -> tuple[Callable[[], None], list[int]]:
    steps = [0]

    def step() -> None:
        steps[0] += 1

    return step, steps


def test_a_runner_warms_up_records_once_then_replays() -> None:
    step, steps = counter()
    recorder = CountingRecorder()
    run(Runner(step, recorder), [9, 8, 7, 6, 5])
    assert recorder.calls == ["warm", "warm", "record", "replay", "replay", "replay"]
    assert steps[0] == 5  # recording itself runs nothing; every call made one iteration


def test_a_graph_is_not_recorded_for_the_last_few_iterations() -> None:
    step, steps = counter()
    recorder = CountingRecorder()
    short = list(range(step_graph.WARMUP_STEPS + step_graph.MIN_REMAINING - 1, 0, -1))
    run(Runner(step, recorder), short)
    assert "record" not in recorder.calls
    assert steps[0] == len(short)


def test_a_failed_recording_goes_on_eagerly_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    step, steps = counter()
    recorder = CountingRecorder(fail=True)
    runner = Runner(step, recorder)
    with caplog.at_level(logging.WARNING, logger="engine.step_graph"):
        run(runner, [9, 8, 7, 6, 5])
    assert recorder.calls == ["warm", "warm", "record"]  # never tried again
    assert steps[0] == 5
    assert "going on eagerly" in caplog.text


def test_without_a_recorder_every_iteration_is_eager() -> None:
    step, steps = counter()
    run(Runner(step, None), [3, 2, 1])
    assert steps[0] == 3
