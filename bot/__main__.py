"""`python -m bot`: settings -> store -> engine -> service -> adapters. Wiring only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from bot.challenges import Challenges
from bot.service import PaintService
from bot.settings import ConfigError, Settings, load_environment
from bot.store import Store
from engine.client import EngineClient, EngineUnavailable
from engine.protocol import EngineConfig

log = logging.getLogger("bot")


class StartupError(Exception):
    """A problem the admin must fix before the bot can run; the message says how."""


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
    try:
        asyncio.run(run(settings))
    except StartupError as error:
        log.error("%s", error)
        print(f"atelier: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def run(settings: Settings) -> None:
    store = Store.open(settings.data_dir / "atelier.sqlite3")
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    runners: dict[str, asyncio.Task[None]] = {}
    stack = contextlib.AsyncExitStack()
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
        try:
            await service.start()
        except EngineUnavailable as error:
            raise StartupError(f"the engine cannot start: {error.message}") from None
        stack.push_async_callback(service.close)
        # After the adapters: a deadline that passed while the bot was down is announced now.
        await challenges.start()
        stack.push_async_callback(challenges.close)
        log.info("Atelier is running on %s", ", ".join(runners) or "no platform")
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait(
            [stopper, *runners.values()], return_when=asyncio.FIRST_COMPLETED
        )
        for name, task in runners.items():
            if task in done and task.exception() is not None:
                raise StartupError(_explain(name, task.exception()))
        stopper.cancel()
    finally:
        log.info("shutting down")
        await stack.aclose()  # adapters stop polling and disconnect; the service stops
        for task in runners.values():
            task.cancel()
        await asyncio.gather(*runners.values(), return_exceptions=True)
        await engine.close()  # idempotent; covers an engine that failed to start
        store.close()


def _explain(platform: str, error: BaseException | None) -> str:
    name = type(error).__name__
    if name in ("LoginFailure", "TelegramUnauthorizedError"):
        variable = "DISCORD_TOKEN" if platform == "Discord" else "TELEGRAM_TOKEN"
        return f"{platform} rejected the token: check {variable} (it may have been reset)."
    return f"{platform} stopped: {name}: {error}"


if __name__ == "__main__":
    sys.exit(main())
