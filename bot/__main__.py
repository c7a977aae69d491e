"""`python -m bot`: settings -> store -> engine -> service -> adapters. Wiring only.

The process, in order: settings (a bad one stops it with exit status 2), logging and the log
redaction (every secret out of every line from here on), the data folder's lock (a second
process on the same folder stops at once), files created owner-only, the secrets removed from
the environment that the engine process inherits, then the bot. A problem the admin must fix
(a damaged database, an engine that cannot start, a rejected token) is one clear line and exit
status 1; so is a long-lived task that keeps failing, so that Docker or systemd start a fresh
process. SIGINT or SIGTERM stops it gracefully: deliveries in flight get
:data:`DELIVERY_GRACE` seconds, then the platforms, the service, the engine and the store close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Final

from bot import redaction
from bot.challenges import Challenges
from bot.engine_client import EngineClient, EngineCrashed, EngineUnavailable
from bot.folder_lock import FolderInUse, FolderLock
from bot.sandbox import SECRET_NAME, Sandbox, scrub_environment
from bot.service import PaintService
from bot.settings import ConfigError, Settings, load_environment
from bot.store import Store, StoreUnavailable
from bot.supervisor import Supervisor
from engine.protocol import EngineConfig

log = logging.getLogger("bot")

DELIVERY_GRACE: Final = 20.0  # seconds paintings being posted get at shutdown
PRIVATE_UMASK: Final = 0o077  # files and folders this process (and the engine) creates


class StartupError(Exception):
    """A problem the admin must fix before the bot can run; the message says how."""


class ProcessFailure(Exception):
    """The bot cannot go on (a task keeps failing); a fresh process should be started."""


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
    try:
        with lock:
            asyncio.run(run(settings))
    except (StartupError, ProcessFailure) as error:
        return _fail(redactor, str(error))
    except KeyboardInterrupt:
        pass
    return 0


def _fail(redactor: redaction.Redactor, message: str) -> int:
    log.error("%s", message)
    print(f"atelier: {redactor.redact(message)}", file=sys.stderr)
    return 1


async def run(settings: Settings) -> None:
    try:
        store = Store.open(settings.data_dir / "atelier.sqlite3")
    except StoreUnavailable as error:
        raise StartupError(str(error)) from None
    supervisor = Supervisor()
    engine = EngineClient(
        EngineConfig(
            device=settings.engine.device,
            weights=settings.engine.weights,
            max_input_bytes=settings.limits.max_input_bytes,
            log_level=settings.log_level,
        )
    )
    service = PaintService(
        store=store,
        engine=engine,
        limits=settings.limits,
        data_dir=settings.data_dir,
        preview_seconds=settings.engine.preview_seconds,
        default_quality=settings.engine.default_quality,
        sandbox=Sandbox(secrets=redaction.secret_values(settings)),
        supervisor=supervisor,
    )
    challenges = Challenges(
        store=store,
        service=service,
        data_dir=settings.data_dir,
        limits=settings.limits,
        supervisor=supervisor,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    runners: dict[str, asyncio.Task[None]] = {}
    stack = contextlib.AsyncExitStack()
    started = False
    try:
        # Adapters first: they subscribe to the service, so jobs recovered at start reach them.
        if settings.discord is not None:
            from bot.discord_app import AtelierDiscord
            from bot.discord_challenges import DiscordChallenges

            discord_client = AtelierDiscord(settings.discord, service)
            DiscordChallenges(discord_client, challenges)
            stack.push_async_callback(discord_client.close)
            token = settings.discord.token.value
            runners["Discord"] = asyncio.create_task(discord_client.start(token))
        if settings.telegram is not None:
            from bot.telegram_app import TelegramApp
            from bot.telegram_challenges import TelegramChallenges

            telegram = TelegramApp(settings.telegram, service)
            TelegramChallenges(telegram, challenges)
            stack.push_async_callback(telegram.close)
            runners["Telegram"] = asyncio.create_task(telegram.run())
        log.info("starting the engine (device %s)", settings.engine.device)
        await _start(service)
        started = True
        stack.push_async_callback(service.close)
        # After the adapters: a deadline that passed while the bot was down is announced now.
        await challenges.start()
        stack.push_async_callback(challenges.close)
        log.info("Atelier is running on %s", ", ".join(runners) or "no platform")
        stopper = asyncio.create_task(stop.wait())
        failing = asyncio.create_task(supervisor.gave_up())
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
    finally:
        log.info("shutting down")
        try:
            if started:
                await service.deliveries_settled(DELIVERY_GRACE)
            await stack.aclose()  # adapters stop polling and disconnect; the service stops
        finally:
            for task in runners.values():
                task.cancel()
            await asyncio.gather(*runners.values(), return_exceptions=True)
            await engine.close()  # idempotent; covers an engine that failed to start
            store.close()


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


def _explain(platform: str, error: BaseException | None) -> str:
    name = type(error).__name__
    if name in ("LoginFailure", "TelegramUnauthorizedError"):
        variable = "DISCORD_TOKEN" if platform == "Discord" else "TELEGRAM_TOKEN"
        return f"{platform} rejected the token: check {variable} (it may have been reset)."
    return f"{platform} stopped: {name}: {error}"


if __name__ == "__main__":
    sys.exit(main())
