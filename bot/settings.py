"""Configuration, built once at start-up from a mapping (``os.environ`` plus ``.env``).

This is the only module that reads the environment. Every variable is listed in :data:`VARIABLES`
with its default and meaning; the README's configuration table is the same list.
Secrets (tokens) never appear in ``repr`` or logs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from engine.schedule import DEFAULT_QUALITY, QUALITIES


class ConfigError(Exception):
    """A missing or malformed variable; the message names it and says how to fix it."""


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    Variable("DISCORD_TOKEN", "", "Discord bot token (Developer Portal -> your app -> Bot)."),
    Variable("DISCORD_DEV_GUILD_ID", "", "A server id where commands sync instantly (testing)."),
    Variable(
        "DISCORD_MODERATOR_ROLE",
        "",
        "Role id whose members may cancel, re-roll or delete any painting (a name works too).",
    ),
    Variable(
        "DISCORD_ORGANISER_ROLE", "", "Role id that may run style challenges (a name works too)."
    ),
    Variable("DISCORD_CHANNELS", "", "Comma-separated channel ids the bot answers in (all)."),
    Variable("TELEGRAM_TOKEN", "", "Telegram bot token from @BotFather."),
    Variable("TELEGRAM_API_BASE", "", "Base URL of a self-hosted Bot API server (official)."),
    Variable("TELEGRAM_MODERATORS", "", "Comma-separated Telegram user ids of moderators."),
    Variable("ATELIER_DATA_DIR", "data", "Folder for the SQLite file, inputs and results."),
    Variable("ATELIER_DEVICE", "auto", "Engine device: auto, cpu, cuda, cuda:N or mps."),
    Variable("ATELIER_VGG_WEIGHTS", "", "Local VGG-19 state-dict file (torchvision keys)."),
    Variable("ATELIER_MAX_JOBS_PER_MEMBER", "1", "Queued or running paintings per member."),
    Variable("ATELIER_MAX_QUEUE", "50", "Paintings waiting in the whole queue."),
    Variable("ATELIER_MAX_QUEUE_PER_CHAT", "10", "Paintings waiting from one channel or chat."),
    Variable("ATELIER_MAX_INPUT_MB", "20", "Largest photo or painting accepted, in MB."),
    Variable("ATELIER_JOB_TIMEOUT", "1200", "Seconds a painting may run before it is stopped."),
    Variable("ATELIER_RETENTION_HOURS", "72", "Hours inputs and results are kept."),
    Variable("ATELIER_FORGET_DAYS", "30", "Days a finished job's record (member, chat) is kept."),
    Variable("ATELIER_DEFAULT_QUALITY", DEFAULT_QUALITY, "Quality when a member names none."),
    Variable("ATELIER_PREVIEW_SECONDS", "6", "Seconds between preview images (0 = none)."),
    Variable("ATELIER_CHALLENGE_MAX_ENTRIES", "3", "Entries per member per challenge."),
    Variable("ATELIER_LOG_LEVEL", "INFO", "Logging level: DEBUG, INFO, WARNING, ERROR."),
    Variable("ATELIER_METRICS_PORT", "", "Port for Prometheus /metrics and /healthz (off)."),
    Variable("ATELIER_REDIS_URL", "", "Redis URL: the scaled mode, GPU-host agents (embedded)."),
    Variable("ATELIER_BOT_ID", "atelier", "Scaled mode: this bot's name in Redis, one per bot."),
    Variable("ATELIER_LEASE_SECONDS", "30", "Scaled mode: seconds until a lost host's job moves."),
)

_KNOWN = {v.name for v in VARIABLES}


@dataclass(frozen=True)
class Secret:
    """A token that prints as ``'***'``."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')" if self.value else "Secret('')"

    def __str__(self) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self.value)


@dataclass(frozen=True)
class DiscordSettings:
    token: Secret
    dev_guild_id: int | None = None
    moderator_role: str | None = None
    organiser_role: str | None = None
    channels: frozenset[int] = frozenset()  # empty: every channel


@dataclass(frozen=True)
class TelegramSettings:
    token: Secret
    api_base: str | None = None
    moderators: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Limits:
    per_member: int = 1
    queue: int = 50
    queue_per_chat: int = 10
    max_input_bytes: int = 20 * 1024 * 1024
    job_timeout: float = 1200.0
    retention_hours: float = 72.0
    challenge_entries: int = 3
    forget_days: float = 30.0


@dataclass(frozen=True)
class EngineSettings:
    device: str = "auto"
    weights: str | None = None
    default_quality: str = DEFAULT_QUALITY
    preview_seconds: float = 6.0


@dataclass(frozen=True)
class ScaleSettings:
    """The scaled mode: jobs wait in Redis, GPU-host agents paint them."""

    redis_url: Secret  # may hold a password
    bot_id: str = "atelier"  # names this bot's event stream; distinct per bot process
    lease: float = 30.0  # seconds; the same on every agent
    redis_password: Secret = Secret("")  # the URL's password alone, kept out of logs too


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    discord: DiscordSettings | None
    telegram: TelegramSettings | None
    limits: Limits = field(default_factory=Limits)
    engine: EngineSettings = field(default_factory=EngineSettings)
    log_level: str = "INFO"
    scale: ScaleSettings | None = None  # None: the embedded mode
    metrics_port: int | None = None  # None: no /metrics or /healthz

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from ``env``; raise :class:`ConfigError` naming any bad variable."""
        read = _Reader(env)
        discord_token = read.text("DISCORD_TOKEN")
        telegram_token = read.text("TELEGRAM_TOKEN")
        discord = (
            DiscordSettings(
                token=Secret(discord_token),
                dev_guild_id=read.optional_int("DISCORD_DEV_GUILD_ID"),
                moderator_role=read.text("DISCORD_MODERATOR_ROLE") or None,
                organiser_role=read.text("DISCORD_ORGANISER_ROLE") or None,
                channels=read.id_set("DISCORD_CHANNELS"),
            )
            if discord_token
            else None
        )
        telegram = (
            TelegramSettings(
                token=Secret(telegram_token),
                api_base=_api_base(read.text("TELEGRAM_API_BASE"), telegram_token),
                moderators=read.id_set("TELEGRAM_MODERATORS"),
            )
            if telegram_token
            else None
        )
        quality = read.text("ATELIER_DEFAULT_QUALITY")
        if quality not in QUALITIES:
            raise ConfigError(
                f"ATELIER_DEFAULT_QUALITY={quality!r} is not one of {', '.join(QUALITIES)}"
            )
        level = read.text("ATELIER_LOG_LEVEL").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"ATELIER_LOG_LEVEL={level!r} is not DEBUG, INFO, WARNING or ERROR")
        return cls(
            data_dir=Path(read.text("ATELIER_DATA_DIR")).expanduser(),
            discord=discord,
            telegram=telegram,
            limits=Limits(
                per_member=read.positive_int("ATELIER_MAX_JOBS_PER_MEMBER"),
                queue=read.positive_int("ATELIER_MAX_QUEUE"),
                queue_per_chat=read.positive_int("ATELIER_MAX_QUEUE_PER_CHAT"),
                max_input_bytes=int(read.positive_float("ATELIER_MAX_INPUT_MB") * 1024 * 1024),
                job_timeout=read.positive_float("ATELIER_JOB_TIMEOUT"),
                retention_hours=read.positive_float("ATELIER_RETENTION_HOURS"),
                challenge_entries=read.positive_int("ATELIER_CHALLENGE_MAX_ENTRIES"),
                forget_days=read.positive_float("ATELIER_FORGET_DAYS"),
            ),
            engine=EngineSettings(
                device=read.text("ATELIER_DEVICE"),
                weights=read.text("ATELIER_VGG_WEIGHTS") or None,
                default_quality=quality,
                preview_seconds=read.non_negative_float("ATELIER_PREVIEW_SECONDS"),
            ),
            log_level=level,
            scale=_scale(read),
            metrics_port=_port(read, "ATELIER_METRICS_PORT"),
        )

    def require_platform(self) -> None:
        if self.discord is None and self.telegram is None:
            raise ConfigError(
                "No chat platform is configured. Set DISCORD_TOKEN (from "
                "https://discord.com/developers/applications -> your app -> Bot -> Reset Token) "
                "and/or TELEGRAM_TOKEN (from @BotFather on Telegram, command /newbot), "
                "in the environment or in a .env file next to the Makefile."
            )


def _api_base(raw: str, token: str) -> str | None:
    """TELEGRAM_API_BASE without trailing slashes: an http(s) URL with a host, or None.

    aiogram pastes the token into this base; a malformed base makes an error message holding
    the token, so it is refused here, and the message never repeats the token.
    """
    base = raw.rstrip("/")
    if not base:
        return None
    try:
        parts = urlsplit(base)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if (
        parts is None
        or not port_ok
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or any(c.isspace() for c in base)
        or (token and token in base)
    ):
        shown = base.replace(token, "***") if token else base
        raise ConfigError(
            f"TELEGRAM_API_BASE={shown!r} must be an http:// or https:// URL with a host, "
            "such as http://localhost:8081 (without /bot<token>)"
        )
    return base


def _scale(read: _Reader) -> ScaleSettings | None:
    """The scaled mode's settings, or None when ATELIER_REDIS_URL is not set."""
    url = read.text("ATELIER_REDIS_URL")
    if not url:
        return None
    try:
        parts = urlsplit(url)
        password = parts.password or ""
        port_ok = parts.scheme == "unix" or parts.port is None or parts.port > 0
    except ValueError:
        parts, password, port_ok = None, "", False
    if (
        parts is None
        or not port_ok
        or parts.scheme not in ("redis", "rediss", "unix")
        or (parts.scheme == "unix" and not parts.path)
        or (parts.scheme != "unix" and not parts.hostname)
    ):
        shown = url.replace(password, "***") if password else url
        raise ConfigError(
            f"ATELIER_REDIS_URL={shown!r} must be a redis://, rediss:// or unix:// URL, "
            "such as redis://localhost:6379/0"
        )
    bot_id = read.text("ATELIER_BOT_ID")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", bot_id):
        raise ConfigError(
            f"ATELIER_BOT_ID={bot_id!r} must be 1 to 64 letters, digits, '.', '_' or '-'"
        )
    return ScaleSettings(
        redis_url=Secret(url),
        bot_id=bot_id,
        lease=read.positive_float("ATELIER_LEASE_SECONDS"),
        redis_password=Secret(password),
    )


def _port(read: _Reader, name: str) -> int | None:
    port = read.optional_int(name)
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"{name} must be a port number from 1 to 65535")
    return port


class _Reader:
    """Typed reads of the known variables, with the default from :data:`VARIABLES`."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._defaults = {v.name: v.default for v in VARIABLES}

    def text(self, name: str) -> str:
        assert name in _KNOWN, name
        return self._env.get(name, self._defaults[name]).strip()

    def optional_int(self, name: str) -> int | None:
        raw = self.text(name)
        if not raw:
            return None
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None

    def positive_int(self, name: str) -> int:
        value = self.optional_int(name)
        if value is None or value < 1:
            raise ConfigError(f"{name} must be a whole number of at least 1")
        return value

    def non_negative_float(self, name: str) -> float:
        raw = self.text(name)
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if value < 0:
            raise ConfigError(f"{name} must not be negative")
        return value

    def positive_float(self, name: str) -> float:
        value = self.non_negative_float(name)
        if value <= 0:
            raise ConfigError(f"{name} must be greater than 0")
        return value

    def id_set(self, name: str) -> frozenset[int]:
        raw = self.text(name)
        try:
            return frozenset(int(part) for part in raw.replace(" ", "").split(",") if part)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} must be comma-separated numeric ids") from None


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``NAME=value`` lines, ``#`` comments, optional quotes."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        name = name.removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def load_environment(dotenv: Path = Path(".env")) -> dict[str, str]:
    """The process environment over the ``.env`` file (the environment wins)."""
    return {**read_dotenv(dotenv), **os.environ}
