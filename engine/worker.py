"""The engine process: take a job, paint it, report; one model kept warm between jobs.

Started by :class:`bot.engine_client.EngineClient` with the ``spawn`` method as
``main(config, connection)``. Only :mod:`engine.protocol` messages cross the connection.
A reader thread receives messages while the main thread paints, so a ``CancelJob`` takes
effect within one optimiser iteration. Torch is imported inside :func:`main`, so importing this
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
    conn.send(protocol.EngineReady(pid=os.getpid(), device=str(stylist.device), kind=stylist.kind))
    log.info("engine ready on %s", stylist.device)

    jobs: queue.Queue[protocol.PaintJob | None] = queue.Queue()
    cancelled: set[str] = set()
    threading.Thread(
        target=_receive, args=(conn, jobs, cancelled), daemon=True, name="engine-inbox"
    ).start()
    while (job := jobs.get()) is not None:
        conn.send(_paint(stylist, config, job, cancelled, conn))
        cancelled.discard(job.job_id)
    log.info("engine shutting down")


def _load_stylist(config: protocol.EngineConfig) -> Stylist:
    from engine.stylize import Stylist

    device = None if config.device == "auto" else config.device
    return Stylist(weights=config.weights, device=device)


def _receive(
    conn: Connection, jobs: queue.Queue[protocol.PaintJob | None], cancelled: set[str]
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
    jobs.put(None)


def _paint(
    stylist: Stylist,
    config: protocol.EngineConfig,
    job: protocol.PaintJob,
    cancelled: set[str],
    conn: Connection,
) -> protocol.JobDone | protocol.JobFailed | protocol.JobCancelled:
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
        conn.send(
            protocol.JobStarted(
                job_id=job.job_id,
                width=plan[-1].width,
                height=plan[-1].height,
                total_steps=sum(s.steps for s in plan),
                total_work=protocol.total_work(plan),
            )
        )

        def report(progress: Progress) -> None:
            conn.send(
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
                )
            )

        result = stylist.paint(
            photo,
            painting,
            settings,
            on_progress=report,
            should_stop=lambda: job.job_id in cancelled,
        )
        data = images.encode_png(result)
        target = Path(job.result_path)
        partial = target.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(target)
    except Cancelled:
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
