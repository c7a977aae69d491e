"""The engine process: take a job or a batch of jobs, paint it, report; one model kept warm.

Started by :class:`engine.client.EngineClient` with the ``spawn`` method as
``main(config, connection)``. Only :mod:`engine.protocol` messages cross the connection.
A ``PaintBatch`` is painted in one pass where its jobs can share it (``Stylist.paint_batch``);
everything reported is per job, as for single jobs. A reader thread receives messages while
the main thread paints, so a ``CancelJob`` takes effect within one optimiser iteration (in a
batch, for that job only). So does ``Shutdown`` (or the bot going away): the painting
in hand stops, nothing more is sent for it (the member did not cancel it; the bot's store still
has it) and the process exits, instead of painting on until the bot's grace period ends and it
is killed. Torch is imported inside :func:`main`, so importing this
module (as the bot does, to name the process target) stays light.

A job that asks for a timelapse has its frames kept while it is painted; the two animations are
written beside the result before its ``JobDone`` (``protocol.timelapse_paths``). ``PinStyle``
and ``UnpinStyle`` are taken in message order between paintings; pinned paintings' targets are
computed only while no painting waits (``pinned_styles.py``), each followed by a
``StyleWarmed``. ``JobDone`` counts the style-cache lookups of the pass that painted the job.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from engine import files, images, protocol, schedule
from engine.errors import Cancelled, PaintError

if TYPE_CHECKING:
    from PIL import Image

    from engine.easel import Commission
    from engine.pinned_styles import PinnedStyles
    from engine.progress import Progress
    from engine.stylize import Stylist
    from engine.timelapse import Timelapse

log = logging.getLogger("engine.worker")

Outcome = protocol.JobDone | protocol.JobFailed | protocol.JobCancelled
Work = protocol.PaintJob | protocol.PaintBatch | protocol.PinStyle | protocol.UnpinStyle


def main(config: protocol.EngineConfig, conn: Connection) -> None:
    """Process entry point. Returns when told to shut down or when the bot goes away."""
    started = time.perf_counter()
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s engine[%(process)d] %(name)s: %(message)s",
    )
    try:
        stylist = _load_stylist(config)
    except Exception as error:  # nothing can be painted; tell the bot why and stop
        code = "weights_missing" if type(error).__name__ == "WeightsError" else "internal"
        message = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
        log.error("engine cannot start: %s", message)
        conn.send(protocol.EngineFailed(code=code, message=message))
        return
    seconds = time.perf_counter() - started
    ready = protocol.EngineReady(
        os.getpid(), str(stylist.device), stylist.kind, stylist.max_batch, seconds
    )
    if not _send(conn, ready):
        return
    log.info("engine ready on %s in %.1fs", stylist.device, seconds)

    from engine.pinned_styles import PinnedStyles

    work: queue.Queue[Work | None] = queue.Queue()
    cancelled: set[str] = set()
    stopping = threading.Event()  # Shutdown received, or the bot went away
    threading.Thread(
        target=_receive, args=(conn, work, cancelled, stopping), daemon=True, name="engine-inbox"
    ).start()
    pins = PinnedStyles(stylist, config)
    while not stopping.is_set() and (item := _next(work, pins, conn, stopping)) is not None:
        if isinstance(item, protocol.PinStyle | protocol.UnpinStyle):
            pins.handle(item)
            continue
        jobs = item.jobs if isinstance(item, protocol.PaintBatch) else (item,)
        _paint(stylist, config, jobs, cancelled, conn, stopping)
        cancelled.difference_update(job.job_id for job in jobs)
    log.info("engine shutting down")


def _next(
    work: queue.Queue[Work | None],
    pins: PinnedStyles,
    conn: Connection,
    stopping: threading.Event,
) -> Work | None:
    """The next message to act on; while none is waiting, warm pinned styles one by one (and
    say so to the bot)."""
    while pins.warming:
        try:
            return work.get_nowait()
        except queue.Empty:
            warmed = pins.warm_next()
            if warmed is not None and not _send(conn, warmed):
                stopping.set()
    return work.get()


def _send(conn: Connection, message: protocol.FromEngine) -> bool:
    """Send to the bot; False (and a log line, not a traceback) when it has gone away."""
    try:
        conn.send(message)
    except (OSError, EOFError, ValueError):  # ValueError: the connection was closed
        log.info("the bot has gone away; %s not delivered", type(message).__name__)
        return False
    return True


def _load_stylist(config: protocol.EngineConfig) -> Stylist:
    from engine.stylize import Stylist

    device = None if config.device == "auto" else config.device
    return Stylist(weights=config.weights, device=device)


def _receive(
    conn: Connection,
    work: queue.Queue[Work | None],
    cancelled: set[str],
    stopping: threading.Event,
) -> None:
    """Thread: sort incoming messages; unknown ones are logged and skipped."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        except Exception:
            log.exception("unreadable message skipped")
            continue
        if isinstance(message, protocol.PaintJob | protocol.PinStyle | protocol.UnpinStyle):
            work.put(message)
        elif isinstance(message, protocol.PaintBatch):
            if message.jobs:
                work.put(message)
        elif isinstance(message, protocol.CancelJob):
            cancelled.add(message.job_id)
        elif isinstance(message, protocol.Shutdown):
            break
        else:
            log.warning("unknown message %s skipped", type(message).__name__)
    stopping.set()
    work.put(None)


def _paint(
    stylist: Stylist,
    config: protocol.EngineConfig,
    jobs: Sequence[protocol.PaintJob],
    cancelled: set[str],
    conn: Connection,
    stopping: threading.Event,
) -> None:
    """Paint ``jobs`` (one, or a batch) and report each one's outcome as soon as it is known.

    A job already cancelled, or whose inputs or options are unusable, is answered at once and
    left out; the others are started and painted together. Nothing more is sent once the bot
    has gone away or the engine is shutting down.
    """
    started = time.perf_counter()
    commissions: list[Commission] = []
    cache = stylist.cache
    lookups = {"hits": cache.hits, "misses": cache.misses}  # set again as the pass begins

    def styles_looked_up() -> tuple[int, int]:
        return cache.hits - lookups["hits"], cache.misses - lookups["misses"]

    for job in jobs:
        if job.job_id in cancelled:
            if not _send(conn, protocol.JobCancelled(job.job_id)):
                stopping.set()
            continue
        try:
            commission, plan = _commission(stylist, config, job, cancelled, conn, stopping)
        except Exception as error:
            _report(conn, stopping, _failure(job.job_id, error, cancelled))
            continue
        if not _send(conn, _started(job.job_id, plan)):
            stopping.set()
            return
        timelapse = _timelapse(commission.photo) if job.timelapse else None
        sender = _outcome_sender(
            job, plan, started, cancelled, conn, stopping, timelapse, styles_looked_up
        )
        commissions.append(replace(commission, on_outcome=sender, on_step=timelapse))
    if not commissions or stopping.is_set():
        return
    lookups.update(hits=cache.hits, misses=cache.misses)
    try:
        stylist.paint_batch(commissions)
    except Exception as error:  # paint_batch answers per job; this is a last resort
        log.error("painting failed", exc_info=error)
        for commission in commissions:
            if commission.on_outcome is not None:
                commission.on_outcome(error)


def _commission(
    stylist: Stylist,
    config: protocol.EngineConfig,
    job: protocol.PaintJob,
    cancelled: set[str],
    conn: Connection,
    stopping: threading.Event,
) -> tuple[Commission, tuple[schedule.Scale, ...]]:
    """What to ask of the Stylist for ``job``; raises for unusable inputs or options."""
    from engine.easel import Commission

    # The engine re-checks every limit itself; it never trusts the bot.
    options = job.options.resolved(schedule.DEFAULT_QUALITY).validate()
    photo, painting, painting2 = _read_inputs(job, config)
    settings = stylist.settings_for(options, preview_every=job.preview_every)
    plan = stylist.plan(photo.size, settings)
    commission = Commission(
        photo,
        painting,
        settings,
        on_progress=_progress_sender(job.job_id, conn, stopping),
        should_stop=lambda: job.job_id in cancelled or stopping.is_set(),
        painting2=painting2,
    )
    return commission, plan


def _timelapse(photo: Image.Image) -> Timelapse:
    from engine.timelapse import Timelapse

    return Timelapse(photo)


def _outcome_sender(
    job: protocol.PaintJob,
    plan: tuple[schedule.Scale, ...],
    started: float,
    cancelled: set[str],
    conn: Connection,
    stopping: threading.Event,
    timelapse: Timelapse | None = None,
    styles_looked_up: Callable[[], tuple[int, int]] = lambda: (0, 0),
) -> Callable[[Image.Image | Exception], None]:
    """Report a job's outcome: write the PNG (and the timelapse, if asked for) and say
    JobDone, or say why there is none. Once per job: a second outcome (only a last-resort
    failure could give one) is dropped. ``styles_looked_up``: the style cache's hits and
    misses in this pass so far."""
    reported = threading.Event()

    def send(outcome: Image.Image | Exception) -> None:
        if reported.is_set():
            return
        reported.set()
        if isinstance(outcome, Exception):
            _report(conn, stopping, _failure(job.job_id, outcome, cancelled))
            return
        try:
            target = _write_png(outcome, Path(job.result_path))
        except Exception as error:
            _report(conn, stopping, _failure(job.job_id, error, cancelled))
            return
        seconds = time.perf_counter() - started
        log.info("job %s painted in %.1fs at %dx%d", job.job_id, seconds, *outcome.size)
        hits, misses = styles_looked_up()
        made = {} if timelapse is None else _write_timelapse(job, timelapse, outcome.size)
        done = protocol.JobDone(
            job_id=job.job_id,
            result_path=str(target),
            width=outcome.size[0],
            height=outcome.size[1],
            seconds=seconds,
            steps=schedule.total_steps(plan),
            work=schedule.total_work(plan),
            timelapse_webp=made.get("webp"),
            timelapse_mp4=made.get("mp4"),
            style_hits=hits,
            style_misses=misses,
        )
        _report(conn, stopping, done)

    return send


def _report(conn: Connection, stopping: threading.Event, outcome: Outcome | None) -> None:
    """Send an outcome (None: nothing to say, the engine is shutting down)."""
    if outcome is not None and not _send(conn, outcome):
        stopping.set()


def _read_inputs(
    job: protocol.PaintJob, config: protocol.EngineConfig
) -> tuple[Image.Image, Image.Image, Image.Image | None]:
    """The photo, the painting and the second painting of a blend (or None), decoded within
    the engine's own byte and pixel limits."""
    limits = {"max_bytes": config.max_input_bytes, "max_pixels": config.max_pixels}
    photo = images.load_path(job.photo_path, role="photo", **limits)
    painting = images.load_path(job.painting_path, role="painting", **limits)
    painting2 = None
    if job.painting2_path is not None:
        painting2 = images.load_path(job.painting2_path, role="second painting", **limits)
    return photo, painting, painting2


def _write_timelapse(
    job: protocol.PaintJob, timelapse: Timelapse, size: tuple[int, int]
) -> dict[str, str]:
    """Encode the timelapse beside the result, each file whole or not at all; the formats
    written, with their paths. A failure is logged: the painting is delivered all the same."""
    from engine import animation

    started = time.perf_counter()
    paths = protocol.timelapse_paths(job.result_path)
    made: dict[str, str] = {}
    try:
        frames = [frame.image for frame in timelapse.frames(animation.fit(size))]
        for fmt, path in (("webp", paths.webp), ("mp4", paths.mp4)):
            files.write_private(Path(path), animation.encode(frames, fmt))
            made[fmt] = path
    except Exception:
        log.warning("job %s: the timelapse could not be made", job.job_id, exc_info=True)
    log.info(
        "job %s: timelapse of %d frames in %.2fs",
        job.job_id,
        len(timelapse.steps),
        time.perf_counter() - started,
    )
    return made


def _started(job_id: str, plan: tuple[schedule.Scale, ...]) -> protocol.JobStarted:
    return protocol.JobStarted(
        job_id=job_id,
        width=plan[-1].width,
        height=plan[-1].height,
        total_steps=schedule.total_steps(plan),
        total_work=schedule.total_work(plan),
    )


def _progress_sender(
    job_id: str, conn: Connection, stopping: threading.Event
) -> Callable[[Progress], None]:
    """Forward each Progress to the bot; when nobody is listening, stop at the next iteration."""

    def report(progress: Progress) -> None:
        if stopping.is_set():
            return
        sent = _send(
            conn,
            protocol.JobProgress(
                job_id=job_id,
                step=progress.step,
                total_steps=progress.total_steps,
                scale=progress.scale,
                scales=progress.scales,
                elapsed=progress.elapsed,
                eta=progress.eta,
                losses=dict(progress.losses),
                preview_jpeg=progress.preview_jpeg,
                note=progress.note,
            ),
        )
        if not sent:
            stopping.set()

    return report


def _write_png(result: Image.Image, target: Path) -> Path:
    """Write the result whole or not at all (the bot never reads half a file), owner-only."""
    return files.write_private(target, images.encode_png(result))


def _failure(
    job_id: str, error: Exception, cancelled: set[str]
) -> protocol.JobFailed | protocol.JobCancelled | None:
    """What to tell the bot about a painting that raised ``error``; None after a shutdown."""
    if isinstance(error, Cancelled):
        if job_id not in cancelled:
            log.info("job %s interrupted: the engine is shutting down", job_id)
            return None
        log.info("job %s cancelled", job_id)
        return protocol.JobCancelled(job_id)
    if isinstance(error, images.ImageError):
        return protocol.JobFailed(job_id, error.code, error.message)
    if isinstance(error, protocol.OptionError):
        return protocol.JobFailed(job_id, "bad_options", str(error))
    if isinstance(error, PaintError):
        return protocol.JobFailed(job_id, error.code, error.message)
    log.error("job %s failed", job_id, exc_info=error)
    return protocol.JobFailed(
        job_id, "internal", "Something went wrong while painting. Please try again."
    )
