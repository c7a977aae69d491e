"""`python -m bot` as an admin runs it, and the same wiring (`build`, `run`) in-process.

The slow test starts the bot process with only environment variables (as `make bot` would,
with a token in the environment), talks to the fake Bot API server over HTTP, spawns the real
engine with seeded random VGG-19 weights, paints a 64 px request end to end, and stops
cleanly on SIGTERM. The fast one runs the same `build` and `run` in this process with the fake
engine in place of the engine process.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from PIL import Image

from bot.__main__ import build, run
from bot.settings import Settings
from tests.bot.telegram.fake_bot_api import Call, FakeBotAPI
from tests.fakes import FakeEngine

ROOT = Path(__file__).parents[2]


def image_bytes(size: tuple[int, int], colour: tuple[int, int, int], fmt: str) -> bytes:
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    img.paste(colour, (0, 0, size[0] // 2, size[1] // 2))
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.slow
async def test_the_bot_process_paints_and_stops_cleanly(
    tmp_path: Path, vgg_weights_path: Path
) -> None:
    async with FakeBotAPI() as api:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "ATELIER_"))},
            "PYTHONPATH": str(ROOT),
            "TELEGRAM_TOKEN": api.token,
            "TELEGRAM_API_BASE": api.base,
            "ATELIER_DATA_DIR": str(tmp_path / "data"),
            "ATELIER_DEVICE": "cpu",
            "ATELIER_VGG_WEIGHTS": str(vgg_weights_path),
            "ATELIER_DEFAULT_QUALITY": "draft",
            "ATELIER_PREVIEW_SECONDS": "0",
        }
        bot = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await api.wait_call("getMe", within=60)  # the Telegram side is up
            # (Updates wait in the fake until the bot's long poll collects them.)
            user = api.user(501, "Mia")
            chat = api.private_chat(user)
            painting = api.document_message(
                user, chat, image_bytes((64, 64), (220, 40, 40), "PNG"), file_name="style.png"
            )
            photo = api.photo_message(
                user,
                chat,
                image_bytes((64, 48), (30, 30, 200), "JPEG"),
                caption="/paint",
                reply_to=painting,
            )
            api.push_message(photo)

            def is_png_result(call: Call) -> bool:
                return (call.upload("document") or b"").startswith(b"\x89PNG")

            result = await api.wait_call("sendDocument", where=is_png_result, within=240)
            png = result.upload("document")
            assert png is not None
            assert Image.open(io.BytesIO(png)).size == (64, 48)
            assert (tmp_path / "data" / "atelier.sqlite3").is_file()
        finally:
            if bot.returncode is None:
                bot.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(bot.communicate(), 60)
        log = output.decode(errors="replace")
        assert bot.returncode == 0, log
        assert "Traceback" not in log, log
        assert "engine up" in log


async def test_build_connects_nothing_and_run_serves_until_stopped(tmp_path: Path) -> None:
    engine = FakeEngine()
    async with FakeBotAPI() as api:
        settings = Settings.from_env(
            {
                "TELEGRAM_TOKEN": api.token,
                "TELEGRAM_API_BASE": api.base,
                "ATELIER_DATA_DIR": str(tmp_path / "data"),
            }
        )
        atelier = build(settings, engine=engine)
        assert atelier.discord is None
        assert atelier.telegram is not None
        assert api.calls == []  # wired, not connected
        assert engine.starts == 0

        stop = asyncio.Event()
        serving = asyncio.create_task(run(atelier, stop=stop))
        user = api.user(502, "Noa")
        chat = api.private_chat(user)
        painting = api.document_message(
            user, chat, image_bytes((64, 64), (220, 40, 40), "PNG"), file_name="style.png"
        )
        api.push_message(
            api.photo_message(
                user,
                chat,
                image_bytes((64, 48), (30, 30, 200), "JPEG"),
                caption="/paint",
                reply_to=painting,
            )
        )
        result = await api.wait_call("sendDocument", within=30)
        assert (result.upload("document") or b"").startswith(b"\x89PNG")
        assert engine.starts == 1

        stop.set()
        await asyncio.wait_for(serving, 30)
        assert engine.up_since is None  # the engine was closed
        with pytest.raises(sqlite3.ProgrammingError):  # and the store
            atelier.store.connection.execute("SELECT 1")
