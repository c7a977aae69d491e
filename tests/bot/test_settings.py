"""Settings from an injected mapping, the .env file, and `python -m bot` without a token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import VARIABLES, ConfigError, Settings, read_dotenv

ROOT = Path(__file__).parents[2]


def test_defaults_with_one_platform() -> None:
    settings = Settings.from_env({"TELEGRAM_TOKEN": "123:abc"})
    assert settings.discord is None
    assert settings.telegram is not None and settings.telegram.token.value == "123:abc"
    assert settings.limits.per_member == 1 and settings.limits.queue == 50
    assert settings.limits.max_input_bytes == 20 * 1024 * 1024
    assert settings.engine.device == "auto" and settings.engine.default_quality == "standard"
    assert settings.data_dir == Path("data")


def test_values_are_parsed_and_typed() -> None:
    settings = Settings.from_env(
        {
            "DISCORD_TOKEN": "tok",
            "DISCORD_DEV_GUILD_ID": "42",
            "DISCORD_CHANNELS": "1, 2,3",
            "ATELIER_MAX_JOBS_PER_MEMBER": "2",
            "ATELIER_JOB_TIMEOUT": "90.5",
            "ATELIER_DEFAULT_QUALITY": "draft",
        }
    )
    assert settings.discord is not None
    assert settings.discord.dev_guild_id == 42
    assert settings.discord.channels == frozenset({1, 2, 3})
    assert settings.limits.per_member == 2 and settings.limits.job_timeout == 90.5
    assert settings.engine.default_quality == "draft"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ATELIER_MAX_QUEUE", "lots", "ATELIER_MAX_QUEUE"),
        ("ATELIER_MAX_QUEUE", "0", "at least 1"),
        ("DISCORD_CHANNELS", "general", "DISCORD_CHANNELS"),
        ("ATELIER_DEFAULT_QUALITY", "ultra", "ATELIER_DEFAULT_QUALITY"),
        ("ATELIER_JOB_TIMEOUT", "-5", "ATELIER_JOB_TIMEOUT"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"DISCORD_TOKEN": "t", name: value})


def test_tokens_never_show_in_repr() -> None:
    settings = Settings.from_env({"DISCORD_TOKEN": "sekrit-discord", "TELEGRAM_TOKEN": "sekrit-tg"})
    assert "sekrit" not in repr(settings)
    assert "sekrit" not in str(settings)


def test_no_platform_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"DISCORD_TOKEN.*TELEGRAM_TOKEN"):
        Settings.from_env({}).require_platform()


def test_dotenv_parsing(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# comment\nexport DISCORD_TOKEN=\"abc def\"\nTELEGRAM_TOKEN='x'\n\nBAD LINE\n")
    assert read_dotenv(env) == {"DISCORD_TOKEN": "abc def", "TELEGRAM_TOKEN": "x"}
    assert read_dotenv(tmp_path / "missing") == {}


def test_readme_configuration_table_matches_the_settings() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| `?([^|`]*)`? \|", readme, flags=re.MULTILINE))
    assert set(rows) == {v.name for v in VARIABLES}
    for variable in VARIABLES:
        assert rows[variable.name].strip() == variable.default, variable.name


def test_bot_without_a_token_exits_with_a_clear_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "TELEGRAM_TOKEN")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "DISCORD_TOKEN" in result.stderr and "TELEGRAM_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


TELEGRAM = "123456:AAE-secret-part-of-the-token"


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://localhost:8081", "http://localhost:8081"),
        ("https://bot-api.example.org/", "https://bot-api.example.org"),
        ("http://127.0.0.1:8081/prefix//", "http://127.0.0.1:8081/prefix"),
        ("", None),
    ],
)
def test_telegram_api_base_accepts_http_urls(base: str, expected: str | None) -> None:
    settings = Settings.from_env({"TELEGRAM_TOKEN": TELEGRAM, "TELEGRAM_API_BASE": base})
    assert settings.telegram is not None
    assert settings.telegram.api_base == expected


@pytest.mark.parametrize(
    "base",
    [
        "localhost:8081",  # no scheme: aiogram would build an invalid URL holding the token
        "bot-api.example.org",
        "ftp://bot-api.example.org",
        "http://",
        "https:///path-only",
        "http://local host:8081",
        "http://localhost:port",
        "http://localhost:8081?x=1",
        f"http://localhost:8081/bot{TELEGRAM}",  # the token pasted into the base by mistake
    ],
)
def test_bad_telegram_api_base_is_a_clear_error_without_the_token(base: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"TELEGRAM_TOKEN": TELEGRAM, "TELEGRAM_API_BASE": base})

    message = str(info.value)
    assert message.startswith("TELEGRAM_API_BASE=")
    assert "http:// or https:// URL with a host" in message
    assert "secret-part" not in message


def test_bot_with_a_bad_api_base_exits_without_printing_the_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "TELEGRAM_"))}
    env.update(PYTHONPATH=str(ROOT), TELEGRAM_TOKEN=TELEGRAM, TELEGRAM_API_BASE="localhost:8081")
    result = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "TELEGRAM_API_BASE" in result.stderr
    assert "secret-part" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_the_scaled_mode_and_metrics_are_off_unless_set() -> None:
    settings = Settings.from_env({"TELEGRAM_TOKEN": "1:x"})
    assert settings.scale is None and settings.metrics_port is None
    scaled = Settings.from_env(
        {
            "TELEGRAM_TOKEN": "1:x",
            "ATELIER_REDIS_URL": "redis://:hunter2@queue.example:6379/0",
            "ATELIER_BOT_ID": "eu-1",
            "ATELIER_LEASE_SECONDS": "45",
            "ATELIER_METRICS_PORT": "9100",
        }
    )
    assert scaled.scale is not None and scaled.metrics_port == 9100
    assert scaled.scale.redis_url.value == "redis://:hunter2@queue.example:6379/0"
    assert (scaled.scale.bot_id, scaled.scale.lease) == ("eu-1", 45.0)
    assert "hunter2" not in repr(scaled)
    from bot.redaction import secret_values

    assert "hunter2" in secret_values(scaled)  # masked in every log line
    unix = Settings.from_env({"TELEGRAM_TOKEN": "1:x", "ATELIER_REDIS_URL": "unix:///run/r.sock"})
    assert unix.scale is not None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ATELIER_REDIS_URL", "queue.example:6379", "redis://, rediss:// or unix://"),
        ("ATELIER_REDIS_URL", "http://:hunter2@queue.example", "redis://, rediss:// or unix://"),
        ("ATELIER_REDIS_URL", "redis://", "redis://, rediss:// or unix://"),
        ("ATELIER_BOT_ID", "two words", "ATELIER_BOT_ID"),
        ("ATELIER_LEASE_SECONDS", "0", "ATELIER_LEASE_SECONDS"),
        ("ATELIER_METRICS_PORT", "70000", "ATELIER_METRICS_PORT"),
        ("ATELIER_METRICS_PORT", "http", "ATELIER_METRICS_PORT"),
    ],
)
def test_bad_scale_and_metrics_values_name_the_variable(
    name: str, value: str, message: str
) -> None:
    env = {"TELEGRAM_TOKEN": "1:x", "ATELIER_REDIS_URL": "redis://localhost:6379/0", name: value}
    with pytest.raises(ConfigError, match=message) as info:
        Settings.from_env(env)
    assert "hunter2" not in str(info.value)
