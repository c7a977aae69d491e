"""`python -m bot` as an admin runs it, and the same wiring (`build`, `run`) in-process.

The slow test starts the bot process with only environment variables (as `make bot` would,
with a token in the environment), talks to the fake Bot API server over HTTP, spawns the real
engine with seeded random VGG-19 weights, paints a 64 px request end to end, and stops
cleanly on SIGTERM. The fast one runs the same `build` and `run` in this process with the fake
engine in place of the engine process.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import socket
import sqlite3
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image

from bot.__main__ import build, run
from bot.settings import Settings
from tests.bot.telegram.fake_bot_api import Call, FakeBotAPI
from tests.fakes import FakeEngine
from tests.scaled import Agents

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


@pytest.mark.slow
async def test_the_bot_and_an_agent_paint_through_redis(
    tmp_path: Path, vgg_weights_path: Path, redis_url: str
) -> None:
    """`python -m bot` in the scaled mode and `python -m engine agent` with the real engine
    (random weights, 64 px), as separate processes meeting only in a real redis-server."""
    async with FakeBotAPI() as api:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "ATELIER_"))},
            "PYTHONPATH": str(ROOT),
            "TELEGRAM_TOKEN": api.token,
            "TELEGRAM_API_BASE": api.base,
            "ATELIER_DATA_DIR": str(tmp_path / "data"),
            "ATELIER_REDIS_URL": redis_url,
            "ATELIER_BOT_ID": "e2e-bot",
            "ATELIER_LEASE_SECONDS": "5",
            "ATELIER_DEFAULT_QUALITY": "draft",
            "ATELIER_PREVIEW_SECONDS": "0",
        }
        agent_log = (tmp_path / "agent.log").open("wb")
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine", "agent", "--redis", redis_url, "--devices", "cpu",
            "--host", "gpu-host", "--weights", str(vgg_weights_path), "--lease", "5",
            "--work-dir", str(tmp_path / "agent"),
            cwd=ROOT, stdout=agent_log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        bot = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            await api.wait_call("getMe", within=60)
            user = api.user(503, "Ines")
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

            def is_png_result(call: Call) -> bool:
                return (call.upload("document") or b"").startswith(b"\x89PNG")

            result = await api.wait_call("sendDocument", where=is_png_result, within=240)
            png = result.upload("document")
            assert png is not None and Image.open(io.BytesIO(png)).size == (64, 48)
        finally:
            for process in (bot, agent):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(bot.communicate(), 60)
            await asyncio.wait_for(agent.wait(), 60)
            agent_log.close()
    log = output.decode(errors="replace")
    agent_text = (tmp_path / "agent.log").read_text(errors="replace")
    assert bot.returncode == 0, log
    assert agent.returncode == 0, agent_text
    assert "Traceback" not in log + agent_text, log + agent_text
    assert "scaled mode: jobs wait in Redis as bot e2e-bot" in log
    assert "engine up" not in log  # the bot started no engine; the agent did
    assert "claimed by gpu-host:cpu" in agent_text


async def test_the_scaled_mode_through_build_and_run_with_metrics(
    tmp_path: Path, redis_url: str, agents: Agents
) -> None:
    """build() in the scaled mode starts no engine; run() paints through Redis and a GPU-host
    agent, and serves /metrics and /healthz on the port set."""
    port = free_port()
    async with FakeBotAPI() as api:
        settings = Settings.from_env(
            {
                "TELEGRAM_TOKEN": api.token,
                "TELEGRAM_API_BASE": api.base,
                "ATELIER_DATA_DIR": str(tmp_path / "data"),
                "ATELIER_REDIS_URL": redis_url,
                "ATELIER_METRICS_PORT": str(port),
            }
        )
        atelier = build(settings)
        assert atelier.engine is None and atelier.service.queue.kind == "scaled"
        assert api.calls == []
        running = Announcement("Atelier is running")
        stop = asyncio.Event()
        with running.watching():
            serving = asyncio.create_task(run(atelier, stop=stop))
            await asyncio.wait_for(running.heard.wait(), 30)
        agents.start("A")
        user = api.user(504, "Ravi")
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
        result = await api.wait_call("sendDocument", within=60)
        assert (result.upload("document") or b"").startswith(b"\x89PNG")
        await atelier.service.drained()  # the metrics' listener has had the events too
        metrics = await asyncio.to_thread(http_get, port, "/metrics")
        assert 'atelier_jobs_finished_total{outcome="done",reason="",role="bot"} 1.0' in metrics
        assert await asyncio.to_thread(http_get, port, "/healthz") == "ok\n"
        stop.set()
        await asyncio.wait_for(serving, 30)
    with pytest.raises(urllib.error.URLError, match="refused"):  # the metrics server closed too
        await asyncio.to_thread(http_get, port, "/healthz")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.read().decode()


class Announcement(logging.Handler):
    """Sets ``heard`` when the bot logs a line starting with ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.heard = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.text):
            self.heard.set()

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        logger = logging.getLogger("bot")
        logger.addHandler(self)
        old = logger.level
        logger.setLevel(logging.INFO)  # (setLevel, not the attribute: it clears level caches)
        try:
            yield
        finally:
            logger.removeHandler(self)
            logger.setLevel(old)


# -- start-up problems: one clear line, exit status 1 -----------------------------------------

TOKEN = "123456:start-up-secret-token-value"


def bot_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "ATELIER_"))},
        "PYTHONPATH": str(ROOT),
        "TELEGRAM_TOKEN": TOKEN,
        "TELEGRAM_API_BASE": "http://127.0.0.1:9",  # nothing is reached before the failure
        "ATELIER_DATA_DIR": str(tmp_path / "data"),
        "ATELIER_DEVICE": "cpu",
        **extra,
    }


def run_bot(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout


def test_a_second_bot_on_the_same_data_folder_stops_at_once(tmp_path: Path) -> None:
    import subprocess

    data = tmp_path / "data"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom pathlib import Path\nfrom bot.folder_lock import FolderLock\n"
            "lock = FolderLock.take(Path(sys.argv[1]))\nprint('holding', flush=True)\n"
            "sys.stdin.read()\n",
            str(data),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        code, output = run_bot(tmp_path, bot_env(tmp_path))
    finally:
        holder.communicate("", timeout=30)
    assert code == 1, output
    assert f"in use by another Atelier process (pid {holder.pid})" in output
    assert "Traceback" not in output
    assert not (data / "atelier.sqlite3").exists()  # it stopped before touching anything


def test_a_damaged_database_is_one_clear_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "atelier.sqlite3").write_bytes(b"\x00garbage, not a database" * 500)
    code, output = run_bot(tmp_path, bot_env(tmp_path))
    assert code == 1, output
    assert "atelier.sqlite3 is damaged or not a database" in output
    assert "Traceback" not in output
    assert TOKEN not in output


async def test_build_keeps_the_saved_styles_warm_in_the_local_engine(tmp_path: Path) -> None:
    from bot.store import Store
    from bot.styles import StyleLibrary
    from tests.fakes import png_bytes

    data = tmp_path / "data"
    store = Store.open(data / "atelier.sqlite3")

    async def accept(data: bytes, role: str) -> None:
        return None

    saved = await StyleLibrary(store=store, data_dir=data, check=accept).add(
        platform="telegram",
        community_id="-100",
        name="sea",
        painting=png_bytes(),
        painting_name="sea.png",
        added_by="1",
        added_by_name="Ada",
    )
    store.close()
    settings = Settings.from_env(
        {"TELEGRAM_TOKEN": TOKEN, "ATELIER_DATA_DIR": str(data), "ATELIER_DEFAULT_QUALITY": "high"}
    )
    engine = FakeEngine()
    atelier = build(settings, engine=engine)
    try:
        assert engine.pins == {saved.painting_path: "high"}
    finally:
        atelier.store.close()


def test_a_database_from_a_newer_version_is_one_clear_error(tmp_path: Path) -> None:
    """The style library's tables a later version made are not guessed at."""
    from bot.__main__ import StartupError
    from bot.store import Store

    data = tmp_path / "data"
    store = Store.open(data / "atelier.sqlite3")
    store.set_meta("schema.styles", "99")
    store.close()
    settings = Settings.from_env({"TELEGRAM_TOKEN": TOKEN, "ATELIER_DATA_DIR": str(data)})
    with pytest.raises(StartupError, match="styles tables from a newer version of Atelier"):
        build(settings, engine=FakeEngine())


async def test_an_engine_that_dies_while_starting_is_one_clear_line(tmp_path: Path) -> None:
    # A torch that kills the engine process as it loads (a broken install, a bad driver).
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "torch.py").write_text("import os\nos._exit(3)\n")
    async with FakeBotAPI() as api:  # Telegram itself is fine
        env = bot_env(tmp_path, TELEGRAM_TOKEN=api.token, TELEGRAM_API_BASE=api.base)
        env["PYTHONPATH"] = f"{broken}{os.pathsep}{ROOT}"
        bot = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(bot.communicate(), 120)
    text = output.decode(errors="replace")
    assert bot.returncode == 1, text
    assert "the engine process stopped while starting" in text
    assert "Traceback" not in text
    assert api.token not in text


class FailingDownloads(FakeBotAPI):
    """A Bot API whose file downloads all answer 404 (an expired or purged file)."""

    async def _file(self, request: web.Request) -> web.Response:
        self.downloads.append(request.match_info["path"])
        return web.Response(status=404)


@pytest.mark.slow
async def test_the_token_appears_nowhere_when_a_download_fails(
    tmp_path: Path, vgg_weights_path: Path
) -> None:
    async with FailingDownloads() as api:
        env = bot_env(
            tmp_path,
            TELEGRAM_TOKEN=api.token,
            TELEGRAM_API_BASE=api.base,
            ATELIER_VGG_WEIGHTS=str(vgg_weights_path),
            ATELIER_LOG_LEVEL="DEBUG",
        )
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
            await api.wait_call("getMe", within=60)
            user = api.user(502, "Noor")
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
            await api.wait_until(lambda: bool(api.downloads), within=120)
            answered = await api.wait_call(
                "sendMessage", where=lambda call: call.chat_id == chat["id"], within=60
            )
        finally:
            if bot.returncode is None:
                bot.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(bot.communicate(), 60)
    text = output.decode(errors="replace")
    assert api.downloads  # the download was tried, and failed
    # The member was asked to send it again (both downloads fail; either may be told first).
    assert answered.text in (
        "I couldn't download the photo (“photo.jpg”) from Telegram. Please send it again.",
        "I couldn't download the painting (“style.png”) from Telegram. Please send it again.",
    )
    assert "ClientResponseError (HTTP 404)" in text  # logged by its kind, not its URL
    assert api.token not in text
    assert api.token.split(":", 1)[1] not in text


async def test_a_task_that_keeps_failing_stops_run_and_everything_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.__main__ as main_module
    from bot.supervisor import Supervisor

    async def no_pause(seconds: float) -> None:
        await asyncio.sleep(0)

    monkeypatch.setattr(
        main_module, "Supervisor", lambda: Supervisor(sleep=no_pause, max_failures=2)
    )
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
        serving = asyncio.create_task(run(atelier))
        await api.wait_call("getMe", within=30)

        async def broken() -> None:
            raise OSError(5, "Input/output error")  # the disk under the data folder failed

        atelier.supervisor.spawn("paint-housekeeping", broken)
        with pytest.raises(main_module.ProcessFailure, match="paint-housekeeping failed 3 times"):
            await asyncio.wait_for(serving, 30)
    assert engine.up_since is None
    with pytest.raises(sqlite3.ProgrammingError):
        atelier.store.connection.execute("SELECT 1")


async def test_a_result_being_posted_at_shutdown_is_posted_before_the_bot_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM (a deploy) while a painting is being uploaded: the upload gets its grace and
    finishes, the painting counts as delivered, and nothing is posted twice after."""
    engine = FakeEngine(auto=False)
    async with FakeBotAPI() as api:
        settings = Settings.from_env(
            {
                "TELEGRAM_TOKEN": api.token,
                "TELEGRAM_API_BASE": api.base,
                "ATELIER_DATA_DIR": str(tmp_path / "data"),
            }
        )
        atelier = build(settings, engine=engine)
        settling = asyncio.Event()
        settled = atelier.service.deliveries_settled

        async def settle(grace: float) -> bool:
            settling.set()
            return await settled(grace)

        monkeypatch.setattr(atelier.service, "deliveries_settled", settle)
        stop = asyncio.Event()
        serving = asyncio.create_task(run(atelier, stop=stop))
        user = api.user(503, "Oda")
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
        job_id = await engine.wait_started()
        upload = api.hold("sendDocument")  # the full-quality file is slow to upload
        engine.finish(job_id)
        await api.wait_until(lambda: any(c.method == "sendDocument" for c in api.waiting))
        stop.set()  # SIGTERM
        await asyncio.wait_for(settling.wait(), 30)
        assert not serving.done()
        held = atelier.store.get_job(job_id)
        assert held is not None and held.delivered_at is None  # not out yet, so not delivered
        upload.set()
        await asyncio.wait_for(serving, 30)
    [document] = api.calls_to("sendDocument")
    assert document.error is None
    # The delivery ran to its end (its last step, the buttons under the photo) before the stop.
    [buttons] = api.calls_to("editMessageReplyMarkup")
    assert buttons.error is None
    with sqlite3.connect(tmp_path / "data" / "atelier.sqlite3") as db:
        [(delivered_at,)] = db.execute("SELECT delivered_at FROM jobs WHERE id = ?", (job_id,))
    assert delivered_at is not None
