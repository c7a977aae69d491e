"""`python -m bot`: settings -> store -> engine or Redis -> service -> challenges -> platforms.

:func:`build` wires everything and connects nothing; :func:`run` connects, serves until a
signal (or ``stop``), and shuts down in order. Tools and tests use the same two functions.
With ``ATELIER_REDIS_URL`` set the bot starts no engine: its jobs wait in Redis and GPU-host
agents paint them (:mod:`bot.scaled_queue`; redis-py comes with ``pip install atelier[scale]``).
With ``ATELIER_METRICS_PORT`` set it serves Prometheus ``/metrics`` and ``/healthz``.

:func:`main`, the process, in order: settings (a bad one stops it with exit status 2), logging
and the log redaction (every secret out of every line from here on), the data folder's lock (a
second process on the same folder stops at once), files created owner-only, the secrets
removed from the environment the engine process inherits, then :func:`build` and :func:`run`.
A problem the admin must fix (a damaged database, an engine that cannot start, a rejected
token) is one clear line and exit status 1; so is a long-lived task that keeps failing, so that
Docker or systemd start a fresh process. On SIGINT or SIGTERM, deliveries in flight get
:data:`DELIVERY_GRACE` seconds before anything closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bot import monitoring, redaction
from bot.challenges import Challenges
from bot.discord import AtelierDiscord, build_client
from bot.folder_lock import FolderInUse, FolderLock
from bot.job_queue import JobQueue, QueueUnavailable
from bot.sandbox import SECRET_NAME, Sandbox, scrub_environment
from bot.service import PaintService
from bot.settings import ConfigError, Settings, load_environment
from bot.store import Store, StoreUnavailable
from bot.styles import StyleLibrary
from bot.supervisor import Supervisor
from bot.telegram import TelegramApp, build_app
from engine.client import Engine, EngineClient, EngineCrashed, EngineUnavailable
from engine.protocol import EngineConfig

log = logging.getLogger("bot")

DELIVERY_GRACE: Final = 20.0  # seconds paintings being posted get at shutdown
PRIVATE_UMASK: Final = 0o077  # files and folders this process (and the engine) creates


class StartupError(Exception):
    """A problem the admin must fix before the bot can run; the message says how."""


class ProcessFailure(Exception):
    """The bot cannot go on (a task keeps failing); a fresh process should be started."""


@dataclass
class Atelier:
    """The bot, wired: every part made, nothing connected or started."""

    settings: Settings
    store: Store
    engine: Engine | None  # the local engine; None in the scaled mode
    service: PaintService
    challenges: Challenges
    discord: AtelierDiscord | None
    telegram: TelegramApp | None
    supervisor: Supervisor  # the long-lived tasks; run() stops when it gives up on one
    sandbox: Sandbox  # where member images are decoded, never in this process
    styles: StyleLibrary


def build(settings: Settings, *, engine: Engine | None = None) -> Atelier:
    """Make every part from ``settings``; ``engine`` replaces the engine process (tests).

    Raises :class:`StartupError` for a database that cannot be opened, or a scaled mode without
    redis-py installed.
    """
    try:
        store = Store.open(settings.data_dir / "atelier.sqlite3")
    except StoreUnavailable as error:
        raise StartupError(str(error)) from None
    queue = _scaled_queue(settings) if settings.scale is not None and engine is None else None
    if engine is None and queue is None:
        engine = EngineClient(
            EngineConfig(
                device=settings.engine.device,
                weights=settings.engine.weights,
                max_input_bytes=settings.limits.max_input_bytes,
                log_level=settings.log_level,
            )
        )
    supervisor = Supervisor()
    sandbox = Sandbox(secrets=redaction.secret_values(settings))
    service = PaintService(
        store=store,
        engine=engine,
        queue=queue,
        limits=settings.limits,
        data_dir=settings.data_dir,
        preview_seconds=settings.engine.preview_seconds,
        default_quality=settings.engine.default_quality,
        sandbox=sandbox,
        supervisor=supervisor,
    )
    try:
        styles = StyleLibrary(
            store=store,
            data_dir=settings.data_dir,
            check=service.check_image,
            sandbox=sandbox,
            # The library's paintings stay warm in the local engine's style cache (the client
            # pins them again after every engine start). Agents of the scaled mode do not
            # get pins: their engines analyse a library painting at its first use.
            keep_warm=engine,
            warm_quality=settings.engine.default_quality,
        )
    except StoreUnavailable as error:  # its tables are from a newer version
        store.close()
        raise StartupError(str(error)) from None
    styles.keep_all_warm()  # sent to the engine once it is up
    challenges = Challenges(
        store=store,
        service=service,
        data_dir=settings.data_dir,
        limits=settings.limits,
        supervisor=supervisor,
        on_ended=styles.keep,  # a closed challenge's painting joins its community's styles
    )
    # The platforms subscribe to the service as they are made, so jobs recovered at start
    # reach them. They share the sandbox (status pictures, results made to fit an upload).
    discord = (
        build_client(settings.discord, service, challenges, sandbox=sandbox, styles=styles)
        if settings.discord
        else None
    )
    telegram = (
        build_app(settings.telegram, service, challenges, sandbox=sandbox, styles=styles)
        if settings.telegram
        else None
    )
    return Atelier(
        settings, store, engine, service, challenges, discord, telegram, supervisor, sandbox, styles
    )


def _scaled_queue(settings: Settings) -> JobQueue:
    """The Redis job queue (imported here: the default install has no redis-py)."""
    assert settings.scale is not None
    try:
        from bot.scaled_queue import ScaledQueue
    except ImportError as error:
        raise StartupError(
            f"ATELIER_REDIS_URL is set but redis-py is missing ({error}): "
            "pip install 'atelier[scale]'"
        ) from None
    return ScaledQueue(
        settings.scale.redis_url.value,
        bot_id=settings.scale.bot_id,
        limits=settings.limits,
        results_dir=settings.data_dir / "results",
        preview_seconds=settings.engine.preview_seconds,
        lease=settings.scale.lease,
    )


async def run(atelier: Atelier, *, stop: asyncio.Event | None = None) -> None:
    """Connect the platforms, start the engine and the service, and serve until SIGINT,
    SIGTERM or ``stop``; then give deliveries in flight their grace, and close challenges,
    service, platforms, engine and store (each even if one before it fails). A platform that
    stops on its own (a rejected token) raises StartupError; a supervised task that keeps
    failing raises ProcessFailure."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    runners: dict[str, asyncio.Task[None]] = {}
    async with contextlib.AsyncExitStack() as stack:  # closes in the reverse order of pushes
        stack.callback(atelier.store.close)
        if atelier.engine is not None:  # idempotent; also if it never started
            stack.push_async_callback(atelier.engine.close)
        if atelier.discord is not None:
            stack.push_async_callback(_stop, atelier.discord.close, runners, "Discord")
            token = atelier.settings.discord.token.value if atelier.settings.discord else ""
            runners["Discord"] = asyncio.create_task(atelier.discord.start(token))
        if atelier.telegram is not None:
            stack.push_async_callback(_stop, atelier.telegram.close, runners, "Telegram")
            runners["Telegram"] = asyncio.create_task(atelier.telegram.run())
        if atelier.settings.scale is None:
            log.info("starting the engine (device %s)", atelier.settings.engine.device)
        else:
            log.info("scaled mode: jobs wait in Redis as bot %s", atelier.settings.scale.bot_id)
        await _start(atelier.service)
        stack.push_async_callback(atelier.service.close)
        if atelier.settings.metrics_port is not None:
            server = await _serve_metrics(atelier.service, atelier.settings.metrics_port)
            stack.push_async_callback(server.close)
        # After the platforms: a deadline that passed while the bot was down is announced now.
        await atelier.challenges.start()
        stack.push_async_callback(atelier.challenges.close)
        # First at shutdown: paintings being posted get their grace, before anything closes.
        stack.push_async_callback(atelier.service.deliveries_settled, DELIVERY_GRACE)
        stack.callback(log.info, "shutting down")
        log.info("Atelier is running on %s", ", ".join(runners) or "no platform")
        stopper = asyncio.create_task(stop.wait())
        failing = asyncio.create_task(atelier.supervisor.gave_up())
        done, _ = await asyncio.wait(
            [stopper, failing, *runners.values()], return_when=asyncio.FIRST_COMPLETED
        )
        stopper.cancel()
        failing.cancel()
        if failing in done:
            raise ProcessFailure(str(failing.result()))
        for name, task in runners.items():
            if task in done and task.exception() is not None:
                raise StartupError(_explain(name, task.exception()))


async def _start(service: PaintService) -> None:
    """Start the service (recovery and the engine); what stops it is one clear line."""
    try:
        await service.start()
    except EngineUnavailable as error:
        raise StartupError(f"the engine cannot start: {error.message}") from None
    except EngineCrashed as error:
        raise StartupError(
            f"the engine process stopped while starting ({error}); its log lines above say why"
        ) from None
    except TimeoutError:
        raise StartupError(
            "the engine did not get ready in time (loading the model took too long)"
        ) from None
    except QueueUnavailable as error:
        raise StartupError(f"the job queue cannot be used: {error}") from None


async def _serve_metrics(service: PaintService, port: int) -> monitoring.MonitoringServer:
    try:
        return await monitoring.serve(service, port)
    except OSError as error:
        raise StartupError(
            f"cannot serve metrics on port {port} ({error.strerror or error}): "
            "set ATELIER_METRICS_PORT to a free port, or leave it empty"
        ) from None


async def _stop(
    close: Callable[[], Awaitable[None]], runners: dict[str, asyncio.Task[None]], name: str
) -> None:
    """Close a platform, then end its task (long polling or the gateway)."""
    await close()
    task = runners.get(name)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _explain(platform: str, error: BaseException | None) -> str:
    name = type(error).__name__
    if name in ("LoginFailure", "TelegramUnauthorizedError"):
        variable = "DISCORD_TOKEN" if platform == "Discord" else "TELEGRAM_TOKEN"
        return f"{platform} rejected the token: check {variable} (it may have been reset)."
    return f"{platform} stopped: {name}: {error}"


def main(argv: list[str] | None = None) -> int:
    env = load_environment(Path(".env"))
    try:
        settings = Settings.from_env(env)
        settings.require_platform()
    except ConfigError as error:
        # Before the settings exist, the secrets are whatever the environment calls one.
        early = redaction.Redactor(v for k, v in env.items() if SECRET_NAME.search(k))
        print(f"atelier: {early.redact(str(error))}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("discord.http").setLevel(logging.WARNING)
    secrets = redaction.secret_values(settings)
    redactor = redaction.install(secrets)
    try:
        lock = FolderLock.take(settings.data_dir)
    except (FolderInUse, OSError) as error:
        return _fail(redactor, f"cannot use the data folder: {error}")
    os.umask(PRIVATE_UMASK)
    scrub_environment(secrets)  # before the engine process is spawned: it inherits these

    async def serve() -> None:
        await run(build(settings))

    try:
        with lock:
            asyncio.run(serve())
    except (StartupError, ProcessFailure) as error:
        return _fail(redactor, str(error))
    except KeyboardInterrupt:
        pass
    return 0


def _fail(redactor: redaction.Redactor, message: str) -> int:
    log.error("%s", message)
    print(f"atelier: {redactor.redact(message)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
