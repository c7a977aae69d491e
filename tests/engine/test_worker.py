"""The engine process loop, driven in-process through a fake connection (no spawn)."""

from __future__ import annotations

import logging
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine import protocol, schedule, worker

from ..conftest import make_painting, make_photo

_EOF = object()


class FakeConnection:
    """What the worker sees of ``multiprocessing.Pipe``: ``recv`` blocks, ``send`` records."""

    def __init__(self, on_send: Callable[[FakeConnection, object], None] | None = None) -> None:
        self.incoming: queue.Queue[object] = queue.Queue()
        self.sent: list[object] = []
        self.on_send = on_send
        self.lock = threading.Lock()

    def recv(self) -> object:
        message = self.incoming.get(timeout=60)
        if message is _EOF:
            raise EOFError
        return message

    def send(self, message: object) -> None:
        with self.lock:
            self.sent.append(message)
        if self.on_send is not None:
            self.on_send(self, message)

    def of_type(self, kind: type) -> list[object]:
        return [m for m in self.sent if isinstance(m, kind)]


@pytest.fixture(autouse=True)
def quick_draft(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A 20-step draft preset (the worker takes its steps from the presets, not from the job),
    painted on one CPU thread: the worker runs in a thread here, and two OpenMP threads on a
    busy two-core machine made its steps up to 50 times slower (measured)."""
    monkeypatch.setitem(schedule.PRESETS, ("draft", "cpu"), schedule.Preset(64, (12, 8)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def job(tmp_path: Path) -> protocol.PaintJob:
    photo, painting = tmp_path / "photo.png", tmp_path / "painting.png"
    make_photo(64, 48).save(photo)
    make_painting().save(painting)
    return protocol.PaintJob(
        job_id="j1",
        photo_path=str(photo),
        painting_path=str(painting),
        result_path=str(tmp_path / "result.png"),
        options=protocol.PaintOptions(quality="draft", seed=1),
        preview_every=0.0,
    )


def run_worker(conn: FakeConnection, weights: Path) -> None:
    config = protocol.EngineConfig(device="cpu", weights=str(weights), log_level="WARNING")
    runner = threading.Thread(target=worker.main, args=(config, conn), daemon=True)
    runner.start()
    runner.join(timeout=120)
    assert not runner.is_alive(), "the worker did not return"


def test_paints_a_job_and_stops_on_shutdown(job: protocol.PaintJob, vgg_weights_path: Path) -> None:
    conn = FakeConnection()
    conn.incoming.put(job)

    def after_done(c: FakeConnection, message: object) -> None:
        if isinstance(message, protocol.JobDone):
            c.incoming.put(protocol.Shutdown())

    conn.on_send = after_done
    run_worker(conn, vgg_weights_path)
    assert isinstance(conn.sent[0], protocol.EngineReady)
    (done,) = conn.of_type(protocol.JobDone)
    assert isinstance(done, protocol.JobDone)
    assert Path(done.result_path).is_file()
    assert (done.width, done.height) == (64, 48)


def test_shutdown_stops_the_painting_in_hand(
    job: protocol.PaintJob, vgg_weights_path: Path
) -> None:
    conn = FakeConnection()
    conn.incoming.put(job)
    conn.incoming.put(job.__class__(**{**job.__dict__, "job_id": "j2"}))  # queued behind it

    def shutdown_at_step_2(c: FakeConnection, message: object) -> None:
        if isinstance(message, protocol.JobProgress) and message.step == 2:
            c.incoming.put(protocol.Shutdown())

    conn.on_send = shutdown_at_step_2
    run_worker(conn, vgg_weights_path)
    progress = conn.of_type(protocol.JobProgress)
    assert 2 <= len(progress) < progress[0].total_steps  # stopped within an iteration or so
    # Not the member's cancel: nothing is reported for the job, the queued one is not started.
    assert not conn.of_type(protocol.JobDone | protocol.JobFailed | protocol.JobCancelled)
    assert [m.job_id for m in conn.of_type(protocol.JobStarted)] == ["j1"]
    assert not Path(job.result_path).exists()


def test_a_member_cancel_is_still_reported(job: protocol.PaintJob, vgg_weights_path: Path) -> None:
    conn = FakeConnection()
    conn.incoming.put(job)

    def cancel_at_step_2(c: FakeConnection, message: object) -> None:
        if isinstance(message, protocol.JobProgress) and message.step == 2:
            c.incoming.put(protocol.CancelJob("j1"))
        if isinstance(message, protocol.JobCancelled):
            c.incoming.put(_EOF)

    conn.on_send = cancel_at_step_2
    run_worker(conn, vgg_weights_path)
    assert [m.job_id for m in conn.of_type(protocol.JobCancelled)] == ["j1"]


def test_the_bot_going_away_ends_the_worker_quietly(
    job: protocol.PaintJob, vgg_weights_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conn = FakeConnection()
    conn.incoming.put(job)

    def pipe_breaks_at_step_3(c: FakeConnection, message: object) -> None:
        if isinstance(message, protocol.JobProgress) and message.step >= 3:
            raise BrokenPipeError(32, "Broken pipe")

    conn.on_send = pipe_breaks_at_step_3
    run_worker(conn, vgg_weights_path)  # returns instead of raising BrokenPipeError
    progress = conn.of_type(protocol.JobProgress)
    assert len(progress) < progress[0].total_steps  # stopped painting for nobody
    assert not [r for r in caplog.records if r.exc_info]  # no traceback in the log


def stop_after_outcome(c: FakeConnection, message: object) -> None:
    if isinstance(message, protocol.JobDone | protocol.JobFailed | protocol.JobCancelled):
        c.incoming.put(protocol.Shutdown())


def test_unusable_inputs_and_options_fail_with_their_code(
    job: protocol.PaintJob, vgg_weights_path: Path
) -> None:
    Path(job.photo_path).write_bytes(b"not an image")
    bad_options = replace(job, job_id="j2", options=protocol.PaintOptions(strength=11))
    conn = FakeConnection(on_send=stop_after_outcome)
    conn.incoming.put(job)
    run_worker(conn, vgg_weights_path)
    second = FakeConnection(on_send=stop_after_outcome)
    second.incoming.put(bad_options)
    run_worker(second, vgg_weights_path)
    (image_failure,) = conn.of_type(protocol.JobFailed)
    (options_failure,) = second.of_type(protocol.JobFailed)
    assert isinstance(image_failure, protocol.JobFailed)
    assert isinstance(options_failure, protocol.JobFailed)
    assert (image_failure.job_id, image_failure.code) == ("j1", "bad_image")
    assert (options_failure.job_id, options_failure.code) == ("j2", "bad_options")
    assert "strength 11" in options_failure.message
    assert not conn.of_type(protocol.JobStarted) and not second.of_type(protocol.JobStarted)


def test_an_unexpected_failure_is_logged_and_answered_politely(
    job: protocol.PaintJob,
    vgg_weights_path: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nowhere = replace(job, result_path=str(tmp_path / "missing" / "result.png"))
    conn = FakeConnection(on_send=stop_after_outcome)
    conn.incoming.put(nowhere)
    run_worker(conn, vgg_weights_path)
    (failure,) = conn.of_type(protocol.JobFailed)
    assert isinstance(failure, protocol.JobFailed)
    assert failure.code == "internal"
    assert failure.message == "Something went wrong while painting. Please try again."
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.getMessage() == "job j1 failed"
    assert record.exc_info is not None and record.exc_info[0] is FileNotFoundError


def test_a_batch_is_reported_per_job_and_a_cancel_ends_only_its_own(
    job: protocol.PaintJob, vgg_weights_path: Path, tmp_path: Path
) -> None:
    other_photo = tmp_path / "other.png"
    make_photo(48, 64).save(other_photo)
    second = replace(
        job,
        job_id="j2",
        photo_path=str(other_photo),
        result_path=str(tmp_path / "r2.png"),
        options=protocol.PaintOptions(quality="draft", strength=8, keep_colors=True),
    )
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    broken = replace(job, job_id="j3", photo_path=str(garbage))
    ended: set[str] = set()

    def cancel_j2_then_stop(c: FakeConnection, message: object) -> None:
        if isinstance(message, protocol.JobProgress) and (message.job_id, message.step) == (
            "j2",
            2,
        ):
            c.incoming.put(protocol.CancelJob("j2"))
        if isinstance(message, protocol.JobDone | protocol.JobFailed | protocol.JobCancelled):
            ended.add(message.job_id)
            if ended == {"j1", "j2", "j3"}:
                c.incoming.put(protocol.Shutdown())

    conn = FakeConnection(on_send=cancel_j2_then_stop)
    conn.incoming.put(protocol.PaintBatch((job, second, broken)))
    run_worker(conn, vgg_weights_path)
    (ready,) = conn.of_type(protocol.EngineReady)
    assert isinstance(ready, protocol.EngineReady)
    assert (ready.kind, ready.max_batch) == ("cpu", 1) and ready.seconds > 0
    assert [m.job_id for m in conn.of_type(protocol.JobStarted)] == ["j1", "j2"]
    (failed,) = conn.of_type(protocol.JobFailed)
    assert isinstance(failed, protocol.JobFailed)
    assert (failed.job_id, failed.code) == ("j3", "bad_image")
    assert [m.job_id for m in conn.of_type(protocol.JobCancelled)] == ["j2"]
    (done,) = conn.of_type(protocol.JobDone)
    assert isinstance(done, protocol.JobDone) and done.job_id == "j1"
    assert Path(done.result_path).is_file() and not Path(second.result_path).exists()
    progress = [
        m for m in conn.of_type(protocol.JobProgress) if isinstance(m, protocol.JobProgress)
    ]
    steps = {k: [p.step for p in progress if p.job_id == k] for k in ("j1", "j2")}
    assert steps["j1"] == list(range(1, 21))  # the whole draft preset, 12 + 8 steps
    assert len(steps["j2"]) < 5  # stopped within an iteration or so of its cancel
    # The cancel was reported while j1 was still painting, not when the batch ended.
    order = [m.job_id for m in conn.sent if isinstance(m, protocol.JobCancelled | protocol.JobDone)]
    assert order == ["j2", "j1"]


def test_an_empty_batch_is_skipped(vgg_weights_path: Path) -> None:
    conn = FakeConnection()
    conn.incoming.put(protocol.PaintBatch(()))
    conn.incoming.put(protocol.Shutdown())
    run_worker(conn, vgg_weights_path)
    assert [type(m) for m in conn.sent] == [protocol.EngineReady]


def test_a_result_that_cannot_be_written_leaves_no_partial_file(tmp_path: Path) -> None:
    # A real short write: the child may not write files over 2 KB (as on a full disk).
    script = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from PIL import Image\n"
        "from engine import worker\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))\n"
        "noise = Image.effect_noise((128, 128), 60).convert('RGB')\n"
        "try:\n"
        "    worker._write_png(noise, Path(sys.argv[1]) / 'job.png')\n"
        "except OSError as error:\n"
        "    print('refused', error.errno)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert "refused" in done.stdout, done.stderr
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# Blends, timelapses and pinned styles


def test_a_blended_job_with_a_timelapse_gets_both_animations_beside_its_result(
    job: protocol.PaintJob, vgg_weights_path: Path, tmp_path: Path
) -> None:
    second = tmp_path / "painting2.png"
    make_painting(80, 48, seed=9).save(second)
    blended = replace(
        job,
        painting2_path=str(second),
        options=replace(job.options, blend=30),
        timelapse=True,
    )
    plain = replace(job, job_id="j2", result_path=str(tmp_path / "plain.png"))
    conn = FakeConnection(on_send=stop_after_outcomes(2))
    conn.incoming.put(blended)
    conn.incoming.put(plain)
    run_worker(conn, vgg_weights_path)
    done = {m.job_id: m for m in conn.of_type(protocol.JobDone) if isinstance(m, protocol.JobDone)}
    paths = protocol.timelapse_paths(job.result_path)
    assert paths.webp == str(tmp_path / "result.timelapse.webp")
    assert (done["j1"].timelapse_webp, done["j1"].timelapse_mp4) == (paths.webp, paths.mp4)
    with Image.open(paths.webp) as webp:
        assert webp.is_animated
        assert webp.size == (done["j1"].width, done["j1"].height)
        # The photo and the draft's 20 steps, 0.1 s each, the last held for 1 s (the encoder
        # merges frames that did not change into one of their summed duration).
        assert animation_seconds(webp) == pytest.approx(20 * 0.1 + 1.0)
    assert Path(paths.mp4).read_bytes()[4:8] == b"ftyp"
    for path in (paths.webp, paths.mp4, job.result_path):
        assert Path(path).stat().st_mode & 0o777 == 0o600
    # The blend painted something else than the first painting alone (job j2, no timelapse).
    assert (done["j2"].timelapse_webp, done["j2"].timelapse_mp4) == (None, None)
    assert not Path(protocol.timelapse_paths(plain.result_path).webp).exists()
    with Image.open(job.result_path) as a, Image.open(plain.result_path) as b:
        assert a.tobytes() != b.tobytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def animation_seconds(webp: Image.Image) -> float:
    total = 0
    for index in range(getattr(webp, "n_frames", 1)):
        webp.seek(index)
        webp.load()
        total += webp.info["duration"]
    return total / 1000


def stop_after_outcomes(count: int) -> Callable[[FakeConnection, object], None]:
    ended: list[object] = []

    def on_send(c: FakeConnection, message: object) -> None:
        if isinstance(message, protocol.JobDone | protocol.JobFailed | protocol.JobCancelled):
            ended.append(message)
            if len(ended) == count:
                c.incoming.put(protocol.Shutdown())

    return on_send


def test_a_timelapse_that_cannot_be_made_still_delivers_the_painting(
    job: protocol.PaintJob,
    vgg_weights_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from engine import animation

    def broken(frames: object, fmt: str) -> bytes:
        if fmt == "mp4":
            raise RuntimeError("no encoder")
        return b"RIFF-webp"

    monkeypatch.setattr(animation, "encode", broken)
    conn = FakeConnection(on_send=stop_after_outcome)
    conn.incoming.put(replace(job, timelapse=True))
    run_worker(conn, vgg_weights_path)
    (done,) = conn.of_type(protocol.JobDone)
    assert isinstance(done, protocol.JobDone) and Path(done.result_path).is_file()
    paths = protocol.timelapse_paths(job.result_path)
    assert (done.timelapse_webp, done.timelapse_mp4) == (paths.webp, None)
    assert not Path(paths.mp4).exists()
    assert "the timelapse could not be made" in caplog.text


def test_an_unreadable_second_painting_fails_the_job_with_its_name(
    job: protocol.PaintJob, vgg_weights_path: Path, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    conn = FakeConnection(on_send=stop_after_outcome)
    conn.incoming.put(replace(job, painting2_path=str(garbage)))
    run_worker(conn, vgg_weights_path)
    (failed,) = conn.of_type(protocol.JobFailed)
    assert isinstance(failed, protocol.JobFailed)
    assert failed.code == "bad_image"
    assert failed.message.startswith("The second painting is not an image I can read.")


def test_pins_are_taken_quietly_between_jobs(
    job: protocol.PaintJob, vgg_weights_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine")
    conn = FakeConnection(on_send=stop_after_outcome)
    conn.incoming.put(protocol.PinStyle(job.painting_path, quality="draft"))
    conn.incoming.put(protocol.PinStyle(str(tmp_path / "gone.png")))
    conn.incoming.put(protocol.UnpinStyle(str(tmp_path / "never-pinned.png")))
    conn.incoming.put(job)
    run_worker(conn, vgg_weights_path)
    # A pin answers only once its targets are computed (here possibly after the job, as the
    # engine warms only while idle); nothing else comes back for pins.
    answers = [
        m for m in conn.sent if not isinstance(m, protocol.JobProgress | protocol.StyleWarmed)
    ]
    assert [type(m) for m in answers] == [
        protocol.EngineReady,
        protocol.JobStarted,
        protocol.JobDone,
    ]
    assert all(
        m == protocol.StyleWarmed(job.painting_path, m.seconds)
        for m in conn.of_type(protocol.StyleWarmed)
    )
    assert f"style {job.painting_path} pinned" in caplog.text
    assert f"style {tmp_path / 'gone.png'} not pinned" in caplog.text


def test_a_pinned_painting_is_warmed_while_idle_and_its_first_job_hits_the_cache(
    job: protocol.PaintJob, vgg_weights_path: Path
) -> None:
    """The first job after the pin's StyleWarmed finds every style target in the cache; an
    unpinned painting's first job computes them."""
    # A 4:3 photo at the preset's long side: the shape warm() computes the targets for.
    photo = Path(job.photo_path).with_name("photo-4x3.png")
    make_photo(64, 48).save(photo)
    pinned = replace(job, photo_path=str(photo), job_id="pinned")
    cold = replace(pinned, job_id="cold", painting_path=str(Path(job.photo_path)))

    def on_send(c: FakeConnection, message: object) -> None:
        if isinstance(message, protocol.StyleWarmed):
            c.incoming.put(pinned)
        elif isinstance(message, protocol.JobDone) and message.job_id == "pinned":
            c.incoming.put(cold)
        elif isinstance(message, protocol.JobDone | protocol.JobFailed):
            c.incoming.put(protocol.Shutdown())

    conn = FakeConnection(on_send=on_send)
    conn.incoming.put(protocol.PinStyle(job.painting_path, quality="draft"))
    run_worker(conn, vgg_weights_path)
    (warmed,) = conn.of_type(protocol.StyleWarmed)
    assert isinstance(warmed, protocol.StyleWarmed)
    assert warmed.painting_path == job.painting_path and warmed.seconds > 0
    done = {m.job_id: m for m in conn.of_type(protocol.JobDone) if isinstance(m, protocol.JobDone)}
    assert done["pinned"].style_misses == 0 and done["pinned"].style_hits >= 1
    assert done["cold"].style_misses >= 1
