"""The engine process: take a job, paint it, report; one model kept warm between jobs.

Started by :class:`engine.client.EngineClient` with the ``spawn`` method as
``main(config, connection)``. Only :mod:`engine.protocol` messages cross the connection.
A reader thread receives messages while the main thread paints, so a ``CancelJob`` takes
effect within one optimiser iteration. So does ``Shutdown`` (or the bot going away): the painting
in hand stops, nothing more is sent for it (the member did not cancel it; the bot's store still
has it) and the process exits, instead of painting on until the bot's grace period ends and it
is killed. Torch is imported inside :func:`main`, so importing this
module (as the bot does, to name the process target) stays light.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from engine import files, images, protocol, schedule
from engine.errors import Cancelled, PaintError

if TYPE_CHECKING:
    from PIL import Image

    from engine.progress import Progress
    from engine.stylize import Stylist

log = logging.getLogger("engine.worker")

Outcome = protocol.JobDone | protocol.JobFailed | protocol.JobCancelled


def main(config: protocol.EngineConfig, conn: Connection) -> None:
    """Process entry point. Returns when told to shut down or when the bot goes away."""
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
    if not _send(conn, protocol.EngineReady(os.getpid(), str(stylist.device), stylist.kind)):
        return
    log.info("engine ready on %s", stylist.device)

    jobs: queue.Queue[protocol.PaintJob | None] = queue.Queue()
    cancelled: set[str] = set()
    stopping = threading.Event()  # Shutdown received, or the bot went away
    threading.Thread(
        target=_receive, args=(conn, jobs, cancelled, stopping), daemon=True, name="engine-inbox"
    ).start()
    while not stopping.is_set() and (job := jobs.get()) is not None:
        outcome = _paint(stylist, config, job, cancelled, conn, stopping)
        cancelled.discard(job.job_id)
        if outcome is not None and not _send(conn, outcome):
            break
    log.info("engine shutting down")


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
    jobs: queue.Queue[protocol.PaintJob | None],
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
        if isinstance(message, protocol.PaintJob):
            jobs.put(message)
        elif isinstance(message, protocol.CancelJob):
            cancelled.add(message.job_id)
        elif isinstance(message, protocol.Shutdown):
            break
        else:
            log.warning("unknown message %s skipped", type(message).__name__)
    stopping.set()
    jobs.put(None)


def _paint(
    stylist: Stylist,
    config: protocol.EngineConfig,
    job: protocol.PaintJob,
    cancelled: set[str],
    conn: Connection,
    stopping: threading.Event,
) -> Outcome | None:
    """Paint one job; None when it was interrupted by shutdown (nothing to report)."""
    if job.job_id in cancelled:
        return protocol.JobCancelled(job.job_id)
    started = time.perf_counter()
    try:
        # The engine re-checks every limit itself; it never trusts the bot.
        options = job.options.resolved(schedule.DEFAULT_QUALITY).validate()
        photo, painting = _read_inputs(job, config)
        settings = stylist.settings_for(options, preview_every=job.preview_every)
        plan = stylist.plan(photo.size, settings)
        if not _send(conn, _started(job.job_id, plan)):
            stopping.set()
            return None
        result = stylist.paint(
            photo,
            painting,
            settings,
            on_progress=_progress_sender(job.job_id, conn, stopping),
            should_stop=lambda: job.job_id in cancelled or stopping.is_set(),
        )
        target = _write_png(result, Path(job.result_path))
    except Exception as error:
        return _failure(job.job_id, error, cancelled)
    seconds = time.perf_counter() - started
    log.info("job %s painted in %.1fs at %dx%d", job.job_id, seconds, *result.size)
    return protocol.JobDone(
        job_id=job.job_id,
        result_path=str(target),
        width=result.size[0],
        height=result.size[1],
        seconds=seconds,
        steps=schedule.total_steps(plan),
        work=schedule.total_work(plan),
    )


def _read_inputs(
    job: protocol.PaintJob, config: protocol.EngineConfig
) -> tuple[Image.Image, Image.Image]:
    """The photo and the painting, decoded within the engine's own byte and pixel limits."""
    photo = images.load_path(
        job.photo_path,
        role="photo",
        max_bytes=config.max_input_bytes,
        max_pixels=config.max_pixels,
    )
    painting = images.load_path(
        job.painting_path,
        role="painting",
        max_bytes=config.max_input_bytes,
        max_pixels=config.max_pixels,
    )
    return photo, painting


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
