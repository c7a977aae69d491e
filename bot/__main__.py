"""`python -m bot`: settings -> store -> engine -> service -> challenges -> platforms.

:func:`build` wires everything and connects nothing; :func:`run` connects, serves until a
signal (or ``stop``), and shuts down in order. Tools and tests use the same two functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bot.challenges import Challenges
from bot.discord import AtelierDiscord, build_client
from bot.service import PaintService
from bot.settings import ConfigError, Settings, load_environment
from bot.store import Store
from bot.telegram import TelegramApp, build_app
from engine.client import Engine, EngineClient, EngineUnavailable
from engine.protocol import EngineConfig

log = logging.getLogger("bot")


class StartupError(Exception):
    """A problem the admin must fix before the bot can run; the message says how."""


@dataclass
class Atelier:
    """The bot, wired: every part made, nothing connected or started."""

    settings: Settings
    store: Store
    engine: Engine
    service: PaintService
    challenges: Challenges
    discord: AtelierDiscord | None
    telegram: TelegramApp | None


def build(settings: Settings, *, engine: Engine | None = None) -> Atelier:
    """Make every part from ``settings``; ``engine`` replaces the engine process (tests)."""
    store = Store.open(settings.data_dir / "atelier.sqlite3")
    if engine is None:
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
    )
    challenges = Challenges(
        store=store, service=service, data_dir=settings.data_dir, limits=settings.limits
    )
    # The platforms subscribe to the service as they are made, so jobs recovered at start
    # reach them.
    discord = build_client(settings.discord, service, challenges) if settings.discord else None
    telegram = build_app(settings.telegram, service, challenges) if settings.telegram else None
    return Atelier(settings, store, engine, service, challenges, discord, telegram)


async def run(atelier: Atelier, *, stop: asyncio.Event | None = None) -> None:
    """Connect the platforms, start the engine and the service, and serve until SIGINT,
    SIGTERM or ``stop``; then close the platforms, challenges, service, engine and store, in
    that order. A platform that stops on its own (a rejected token) raises StartupError."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    runners: dict[str, asyncio.Task[None]] = {}
    async with contextlib.AsyncExitStack() as stack:  # closes in the reverse order of pushes
        stack.callback(atelier.store.close)
        stack.push_async_callback(atelier.engine.close)  # idempotent; also if it never started
        if atelier.discord is not None:
            stack.push_async_callback(_stop, atelier.discord.close, runners, "Discord")
            token = atelier.settings.discord.token.value if atelier.settings.discord else ""
            runners["Discord"] = asyncio.create_task(atelier.discord.start(token))
        if atelier.telegram is not None:
            stack.push_async_callback(_stop, atelier.telegram.close, runners, "Telegram")
            runners["Telegram"] = asyncio.create_task(atelier.telegram.run())
        log.info("starting the engine (device %s)", atelier.settings.engine.device)
        try:
            await atelier.service.start()
        except EngineUnavailable as error:
            raise StartupError(f"the engine cannot start: {error.message}") from None
        stack.push_async_callback(atelier.service.close)
        # After the platforms: a deadline that passed while the bot was down is announced now.
        await atelier.challenges.start()
        stack.push_async_callback(atelier.challenges.close)
        # Platforms close first (stop taking requests), the store last.
        stack.callback(log.info, "shutting down")
        log.info("Atelier is running on %s", ", ".join(runners) or "no platform")
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait(
            [stopper, *runners.values()], return_when=asyncio.FIRST_COMPLETED
        )
        stopper.cancel()
        for name, task in runners.items():
            if task in done and task.exception() is not None:
                raise StartupError(_explain(name, task.exception()))


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
        print(f"atelier: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("discord.http").setLevel(logging.WARNING)

    async def serve() -> None:
        await run(build(settings))

    try:
        asyncio.run(serve())
    except StartupError as error:
        log.error("%s", error)
        print(f"atelier: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
