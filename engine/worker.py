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
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from engine import images, protocol

if TYPE_CHECKING:
    from engine.stylize import Progress, Stylist

log = logging.getLogger("engine.worker")


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
) -> protocol.JobDone | protocol.JobFailed | protocol.JobCancelled | None:
    """Paint one job; None when it was interrupted by shutdown (nothing to report)."""
    from engine.stylize import Cancelled, PaintError

    if job.job_id in cancelled:
        return protocol.JobCancelled(job.job_id)
    started = time.perf_counter()
    try:
        # The engine re-checks every limit itself; it never trusts the bot.
        options = job.options.resolved("standard").validate()
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
        settings = stylist.settings_for(options, preview_every=job.preview_every)
        plan = stylist.plan(photo.size, settings)
        started_message = protocol.JobStarted(
            job_id=job.job_id,
            width=plan[-1].width,
            height=plan[-1].height,
            total_steps=sum(s.steps for s in plan),
            total_work=protocol.total_work(plan),
        )
        if not _send(conn, started_message):
            stopping.set()
            return None

        def report(progress: Progress) -> None:
            if stopping.is_set():
                return
            sent = _send(
                conn,
                protocol.JobProgress(
                    job_id=job.job_id,
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
                stopping.set()  # nobody is listening: stop at the next iteration

        result = stylist.paint(
            photo,
            painting,
            settings,
            on_progress=report,
            should_stop=lambda: job.job_id in cancelled or stopping.is_set(),
        )
        data = images.encode_png(result)
        target = Path(job.result_path)
        partial = target.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(target)
    except Cancelled:
        if job.job_id not in cancelled:
            log.info("job %s interrupted: the engine is shutting down", job.job_id)
            return None
        log.info("job %s cancelled", job.job_id)
        return protocol.JobCancelled(job.job_id)
    except images.ImageError as error:
        return protocol.JobFailed(job.job_id, error.code, error.message)
    except protocol.OptionError as error:
        return protocol.JobFailed(job.job_id, "bad_options", str(error))
    except PaintError as error:
        return protocol.JobFailed(job.job_id, error.code, error.message)
    except Exception:
        log.exception("job %s failed", job.job_id)
        return protocol.JobFailed(
            job.job_id, "internal", "Something went wrong while painting. Please try again."
        )
    seconds = time.perf_counter() - started
    log.info("job %s painted in %.1fs at %dx%d", job.job_id, seconds, *result.size)
    return protocol.JobDone(
        job_id=job.job_id,
        result_path=str(target),
        width=result.size[0],
        height=result.size[1],
        seconds=seconds,
        steps=sum(s.steps for s in plan),
        work=protocol.total_work(plan),
    )
