"""The style library: paintings a community saves under a name, to paint with by that name.

    library = StyleLibrary(store=store, data_dir=data_dir, check=service.check_image)
    name = library.check_new("discord", guild_id, "Starry Night")    # before any download
    style = await library.add(platform=..., community_id=..., name=..., painting=data, ...)
    painting = await library.painting(library.get("discord", guild_id, "starry-night"))
    sheet = await library.sheet(styles)                              # one JPEG, thumbnails

Rules (each refusal is a :class:`~bot.style_rules.StyleError` with the member's message, names
marked up by the ``markup`` the adapter passes):

- A community is a Discord server or a Telegram chat; names are unique in it, case-insensitive,
  and stored in lower case: 2 to 32 letters a-z, digits, ``-`` or ``_``
  (:func:`bot.style_rules.check_name`). A name that breaks the rule is answered with one that
  keeps it (:func:`bot.style_rules.slug`), when there is.
- Only organisers add and remove (the adapters decide who is one, as for challenges). The
  painting is checked like any upload (the service's header check), and its pixels are read
  in the sandbox when its thumbnail is drawn (one that cannot be read is refused); the
  same painting twice in one community is refused, naming the style it is saved as. A library
  holds at most :data:`MAX_STYLES`. Name, room and who may add are checked before anything is
  downloaded (:meth:`StyleLibrary.check_new`).
- Painting with a style hands the service the style's bytes, which it stores as the job's own
  input: a style removed while a job using it waits still paints.
- A challenge that closes (not one cancelled) gives its painting to its community's library
  (:meth:`StyleLibrary.keep`, the challenges' ``on_ended`` hook): named after its title,
  with ``-2``, ``-3``, ... when the name is taken; once per challenge, even after a restart or
  after an organiser removed it again.

Files: ``data/styles/<id>/painting.img`` and ``thumbnail.jpg`` (made in the sandbox: this
process decodes no picture), owner-only, kept until the style is removed (not subject to the
retention period). The table is made and kept up to date by :meth:`bot.store.Store.migrate`.

Warm styles: given a ``keep_warm`` hook (:class:`KeepWarm`: the local engine's client), the
library pins every saved painting in the engine's style cache (:meth:`StyleLibrary.keep_all_warm`
at start; the client sends them again after every engine restart), pins a new style when it is
added and unpins one when it is removed, so a library style paints as fast as a repeat.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import logging
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final, Protocol

from bot import replies
from bot.errors import InvalidImage, UserFacingError
from bot.jobs import Challenge, ChallengeState, Style
from bot.replies import PLAIN, Markup
from bot.sandbox import DecoderFailed, Sandbox
from bot.store import Store
from bot.style_rules import (
    NAME,
    NAME_MAX,
    LibraryFull,
    NoSuchStyle,
    StyleExists,
    check_name,
    slug,
)
from engine import files
from engine.images import ImageError

log = logging.getLogger(__name__)

Clock = Callable[[], float]
# Checks a painting like any upload: bot.service.PaintService.check_image(data, role).
Check = Callable[[bytes, str], Awaitable[object]]

MAX_STYLES: Final = 100  # per community
PAGE_SIZE: Final = 12  # styles on one contact sheet
SHEET_COLUMNS: Final = 4
SHEET_TILE: Final = 192  # px
THUMBNAIL_SIDE: Final = 256
CHOICES: Final = 25  # names offered at once (Discord's autocomplete and select menus)

STEPS: Final = (
    """
    CREATE TABLE styles (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        platform TEXT NOT NULL,
        community_id TEXT NOT NULL,
        name TEXT NOT NULL,
        painting_path TEXT NOT NULL,
        thumbnail_path TEXT,
        painting_name TEXT NOT NULL,
        digest TEXT NOT NULL,
        added_by TEXT NOT NULL,
        added_by_name TEXT NOT NULL,
        added_at REAL NOT NULL,
        challenge_id INTEGER,
        UNIQUE (platform, community_id, name)
    );
    CREATE INDEX styles_digest ON styles (platform, community_id, digest);
    CREATE TABLE style_sources (
        challenge_id INTEGER PRIMARY KEY,
        style_id INTEGER,
        kept_at REAL NOT NULL
    );
    """,
)


class KeepWarm(Protocol):
    """Where library paintings are kept warm: :class:`engine.client.EngineClient` (the engine
    computes their style targets ahead and never evicts them)."""

    def pin_style(self, painting_path: str, quality: str = "") -> None: ...

    def unpin_style(self, painting_path: str) -> None: ...


# -- the library -------------------------------------------------------------------------------


class StyleLibrary:
    """Every community's saved styles: a table, their files, their contact sheets."""

    def __init__(
        self,
        *,
        store: Store,
        data_dir: Path,
        check: Check,
        sandbox: Sandbox | None = None,
        clock: Clock = time.time,
        max_styles: int = MAX_STYLES,
        keep_warm: KeepWarm | None = None,
        warm_quality: str = "",
    ) -> None:
        """``check``: how a painting is checked like any upload (the service's
        ``check_image``); ``sandbox``: where thumbnails and contact sheets are made;
        ``keep_warm``: where saved paintings are pinned, for ``warm_quality`` (the host's
        default quality; "" the engine's)."""
        self._keep_warm = keep_warm
        self._warm_quality = warm_quality
        self._store = store
        self._db = store.connection
        self._dir = data_dir / "styles"
        self._check = check
        self._sandbox = sandbox or Sandbox()
        self._clock = clock
        self.max_styles = max_styles
        store.migrate("styles", STEPS)

    # -- organisers ----------------------------------------------------------------------------

    def check_new(self, platform: str, community_id: str, name: str, markup: Markup = PLAIN) -> str:
        """The name a new style would have, once checked: the rule, free here, room left.
        Call it before downloading the painting."""
        name = check_name(name, markup)
        existing = self.find(platform, community_id, name)
        if existing is not None:
            raise StyleExists(replies.style_exists(existing.name, markup))
        if self.count(platform, community_id) >= self.max_styles:
            raise LibraryFull(replies.library_full(self.max_styles))
        return name

    async def add(
        self,
        *,
        platform: str,
        community_id: str,
        name: str,
        painting: bytes,
        painting_name: str,
        added_by: str,
        added_by_name: str,
        challenge_id: int | None = None,
        markup: Markup = PLAIN,
    ) -> Style:
        """Save ``painting`` as ``name``: checked like any upload, a thumbnail made in the
        sandbox, the files and the row together (on any failure neither is left)."""
        name = self.check_new(platform, community_id, name, markup)
        await self._check(painting, "painting")
        digest = hashlib.sha256(painting).hexdigest()
        twin = self._with_digest(platform, community_id, digest)
        if twin is not None:
            raise StyleExists(replies.same_painting(twin.name, markup))
        thumbnail = await self._thumbnail(painting)
        staged = await asyncio.to_thread(self._stage, painting, thumbnail)
        try:
            style_id = self._record(
                staged,
                platform=platform,
                community_id=community_id,
                name=name,
                painting_name=painting_name,
                digest=digest,
                added_by=added_by,
                added_by_name=added_by_name,
                challenge_id=challenge_id,
                has_thumbnail=thumbnail is not None,
            )
        except sqlite3.IntegrityError:
            raise StyleExists(replies.style_exists(name, markup)) from None
        finally:
            await asyncio.to_thread(shutil.rmtree, staged, True)
        style = self._by_id(style_id)
        assert style is not None
        log.info(
            "style %d %r saved in %s/%s by %s", style.id, name, platform, community_id, added_by
        )
        if self._keep_warm is not None:
            self._keep_warm.pin_style(style.painting_path, self._warm_quality)
        return style

    async def remove(
        self, platform: str, community_id: str, name: str, markup: Markup = PLAIN
    ) -> Style:
        """Delete a style and its files. Jobs already queued with it keep their own copy."""
        style = self.get(platform, community_id, name, markup)
        self._db.execute("DELETE FROM styles WHERE id = ?", (style.id,))
        if self._keep_warm is not None:
            self._keep_warm.unpin_style(style.painting_path)
        await asyncio.to_thread(shutil.rmtree, self._dir / str(style.id), True)
        log.info("style %d %r removed from %s/%s", style.id, style.name, platform, community_id)
        return style

    async def keep(self, challenge: Challenge) -> Style | None:
        """Add a closed challenge's painting to its community's library, once: named after its
        title (``-2``, ``-3``, ... when taken). Never raises for the library's rules; a
        challenge already kept (or whose painting is saved already) adds nothing."""
        if challenge.state is not ChallengeState.CLOSED or self._kept(challenge.id):
            return None
        style = None
        try:
            painting = await asyncio.to_thread(Path(challenge.painting_path).read_bytes)
            name = self._free_name(challenge.platform, challenge.community_id, challenge)
            style = await self.add(
                platform=challenge.platform,
                community_id=challenge.community_id,
                name=name,
                painting=painting,
                painting_name=challenge.painting_name,
                added_by=challenge.organiser_id,
                added_by_name=challenge.organiser_name,
                challenge_id=challenge.id,
            )
        except (UserFacingError, OSError) as error:
            log.info(
                "challenge %d: its painting is not added to the library (%s)", challenge.id, error
            )
        self._db.execute(
            "INSERT OR IGNORE INTO style_sources (challenge_id, style_id, kept_at) "
            "VALUES (?, ?, ?)",
            (challenge.id, style.id if style else None, self._clock()),
        )
        return style

    def keep_all_warm(self) -> int:
        """Pin every saved painting, of every community (at start); how many."""
        if self._keep_warm is None:
            return 0
        rows = self._db.execute("SELECT painting_path FROM styles ORDER BY id").fetchall()
        for row in rows:
            self._keep_warm.pin_style(row["painting_path"], self._warm_quality)
        return len(rows)

    # -- members -------------------------------------------------------------------------------

    def find(self, platform: str, community_id: str, name: str) -> Style | None:
        row = self._db.execute(
            "SELECT * FROM styles WHERE platform = ? AND community_id = ? AND name = ?",
            (platform, community_id, name.strip().lower()),
        ).fetchone()
        return _style(row) if row else None

    def get(self, platform: str, community_id: str, name: str, markup: Markup = PLAIN) -> Style:
        """The style called ``name`` here, or :class:`NoSuchStyle` offering close names."""
        style = self.find(platform, community_id, name)
        if style is not None:
            return style
        close = difflib.get_close_matches(
            name.strip().lower(), self.names(platform, community_id, limit=self.max_styles), n=2
        )
        raise NoSuchStyle(replies.no_such_style(name, close, markup))

    async def painting(self, style: Style, markup: Markup = PLAIN) -> bytes:
        """The style's painting; :class:`NoSuchStyle` if it was removed meanwhile."""
        try:
            return await asyncio.to_thread(Path(style.painting_path).read_bytes)
        except FileNotFoundError:
            raise NoSuchStyle(replies.no_such_style(style.name, (), markup)) from None

    def names(
        self, platform: str, community_id: str, typed: str = "", *, limit: int = CHOICES
    ) -> list[str]:
        """Names to offer for what a member has typed so far: those starting with it first,
        then those containing it; alphabetical within each."""
        typed = typed.strip().lower()
        rows = self._db.execute(
            "SELECT name FROM styles WHERE platform = ? AND community_id = ? AND instr(name, ?) "
            "ORDER BY instr(name, ?) != 1, name LIMIT ?",
            (platform, community_id, typed, typed, limit),
        ).fetchall()
        return [row["name"] for row in rows]

    def count(self, platform: str, community_id: str) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) AS n FROM styles WHERE platform = ? AND community_id = ?",
            (platform, community_id),
        ).fetchone()
        return int(row["n"])

    def page(
        self, platform: str, community_id: str, page: int, size: int = PAGE_SIZE
    ) -> tuple[list[Style], int]:
        """One page of the library, alphabetical (none past the last), and how many pages
        there are (at least 1)."""
        pages = max(1, -(-self.count(platform, community_id) // size))
        if page >= pages:  # also a number too big for SQLite's OFFSET
            return [], pages
        rows = self._db.execute(
            "SELECT * FROM styles WHERE platform = ? AND community_id = ? ORDER BY name "
            "LIMIT ? OFFSET ?",
            (platform, community_id, size, max(0, page) * size),
        ).fetchall()
        return [_style(row) for row in rows], pages

    async def sheet(self, styles: Sequence[Style]) -> bytes:
        """One contact sheet of ``styles`` (thumbnails, names under them), drawn in the
        sandbox. Raises :class:`~bot.sandbox.DecoderFailed` if it could not be drawn."""
        tiles = await asyncio.to_thread(
            lambda: [(_read(style.thumbnail_path), style.name) for style in styles]
        )
        return await self._sandbox.sheet(tiles, columns=SHEET_COLUMNS, tile=SHEET_TILE)

    # -- inside --------------------------------------------------------------------------------

    async def _thumbnail(self, painting: bytes) -> bytes | None:
        """The contact sheet's picture of ``painting``; :class:`InvalidImage` when its pixels
        cannot be read (cut short, damaged past its header: the header-only checks before do
        not see it, and a style saved so would fail every painting made with it)."""
        try:
            return await self._sandbox.thumbnail(painting, max_side=THUMBNAIL_SIDE, role="painting")
        except ImageError as error:
            raise InvalidImage(error.message) from None
        except DecoderFailed as error:
            # Over the child's memory or time: not known to be broken (the engine, with more
            # of both, may read it); only its picture on the contact sheet is missing.
            log.warning("style thumbnail not made (%s); the sheet shows a plain tile", error)
            return None

    def _stage(self, painting: bytes, thumbnail: bytes | None) -> Path:
        """The style's files, written whole in a staging folder (renamed into place later)."""
        staged = files.private_folder(self._dir / f".new-{time.monotonic_ns()}")
        files.write_private(staged / "painting.img", painting)
        if thumbnail is not None:
            files.write_private(staged / "thumbnail.jpg", thumbnail)
        return staged

    def _record(
        self,
        staged: Path,
        *,
        platform: str,
        community_id: str,
        name: str,
        painting_name: str,
        digest: str,
        added_by: str,
        added_by_name: str,
        challenge_id: int | None,
        has_thumbnail: bool,
    ) -> int:
        """The row and its folder together: one transaction, the staged folder renamed into
        place inside it."""
        folder: Path | None = None
        try:
            with self._store.transaction():
                cursor = self._db.execute(
                    "INSERT INTO styles (platform, community_id, name, painting_path, "
                    "thumbnail_path, painting_name, digest, added_by, added_by_name, added_at, "
                    "challenge_id) VALUES (?, ?, ?, '', NULL, ?, ?, ?, ?, ?, ?)",
                    (
                        platform,
                        community_id,
                        name,
                        painting_name,
                        digest,
                        added_by,
                        added_by_name,
                        self._clock(),
                        challenge_id,
                    ),
                )
                style_id = int(cursor.lastrowid or 0)
                folder = self._dir / str(style_id)  # ids are never used twice
                staged.replace(folder)
                self._db.execute(
                    "UPDATE styles SET painting_path = ?, thumbnail_path = ? WHERE id = ?",
                    (
                        str(folder / "painting.img"),
                        str(folder / "thumbnail.jpg") if has_thumbnail else None,
                        style_id,
                    ),
                )
        except BaseException:
            if folder is not None and not staged.exists():
                shutil.rmtree(folder, ignore_errors=True)
            raise
        return style_id

    def _by_id(self, style_id: int) -> Style | None:
        row = self._db.execute("SELECT * FROM styles WHERE id = ?", (style_id,)).fetchone()
        return _style(row) if row else None

    def _with_digest(self, platform: str, community_id: str, digest: str) -> Style | None:
        row = self._db.execute(
            "SELECT * FROM styles WHERE platform = ? AND community_id = ? AND digest = ?",
            (platform, community_id, digest),
        ).fetchone()
        return _style(row) if row else None

    def _kept(self, challenge_id: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM style_sources WHERE challenge_id = ?", (challenge_id,)
        ).fetchone()
        return row is not None

    def _free_name(self, platform: str, community_id: str, challenge: Challenge) -> str:
        """A name from the challenge's title that is free here: ``title``, ``title-2``, ..."""
        base = slug(challenge.title)
        if not NAME.fullmatch(base):
            base = f"challenge-{challenge.id}"
        for number in range(1, self.max_styles + 2):
            suffix = "" if number == 1 else f"-{number}"
            candidate = base[: NAME_MAX - len(suffix)].rstrip("-_") + suffix
            if self.find(platform, community_id, candidate) is None:
                return candidate
        return base  # every one taken: the library is full, and add() says so


def _read(path: str | None) -> bytes:
    """A thumbnail's bytes; ``b""`` (a plain tile) when there is none."""
    if path is None:
        return b""
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def _style(row: sqlite3.Row) -> Style:
    return Style(
        id=int(row["id"]),
        platform=row["platform"],
        community_id=row["community_id"],
        name=row["name"],
        painting_path=row["painting_path"],
        thumbnail_path=row["thumbnail_path"],
        painting_name=row["painting_name"],
        digest=row["digest"],
        added_by=row["added_by"],
        added_by_name=row["added_by_name"],
        added_at=float(row["added_at"]),
        challenge_id=row["challenge_id"],
    )
