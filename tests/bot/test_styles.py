"""The style library's rules over a real SQLite store, real files, the real sandbox (thumbnails
and contact sheets in child processes) and the service on a fake engine."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image

from bot.challenges import Challenges, ChallengeState
from bot.errors import InvalidImage
from bot.jobs import Finished, JobEvent, JobState, PaintRequest, Style
from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from bot.style_rules import (
    BadStyleName,
    LibraryFull,
    NoSuchStyle,
    StyleExists,
    check_name,
    slug,
)
from bot.styles import StyleLibrary
from tests.fakes import FakeEngine, FakeTime, jpeg_bytes, png_bytes

STARRY = png_bytes((64, 48), (20, 40, 160))
SCREAM = jpeg_bytes((48, 64), (200, 90, 20))
DAY = 24 * 3600


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine(auto=False)


@pytest.fixture
def library(store: Store, data_dir: Path, service: PaintService, clock: FakeTime) -> StyleLibrary:
    return StyleLibrary(store=store, data_dir=data_dir, check=service.check_image, clock=clock)


async def add(library: StyleLibrary, name: str, painting: bytes = STARRY, **where: str) -> Style:
    return await library.add(
        platform=where.get("platform", "discord"),
        community_id=where.get("community", "g1"),
        name=name,
        painting=painting,
        painting_name="starry.png",
        added_by="u1",
        added_by_name="Olga",
    )


@pytest.mark.parametrize(
    ("typed", "name"),
    [("starry-night", "starry-night"), ("  Starry_Night ", "starry_night"), ("m2", "m2")],
)
def test_names_that_keep_the_rule(typed: str, name: str) -> None:
    assert check_name(typed) == name


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        ("Starry Night", "“Starry Night” can't be a style name. Style names are 2 to 32"),
        ("x", "“x” can't be a style name."),
        ("-dash-first", "Try “dash-first”."),
        ("Café au lait!", "Try “cafe-au-lait”."),
        ("a" * 40, "Try “" + "a" * 32 + "”."),
        ("日本", "can't be a style name. Style names are"),
        ("st\u0430rry", "can't be a style name. Style names are"),
        ("ｓｔａｒｒｙ night", "Try “starry-night”."),
    ],
)
def test_bad_names_say_the_rule_and_offer_one_that_keeps_it(typed: str, said: str) -> None:
    with pytest.raises(BadStyleName) as refused:
        check_name(typed)
    assert said in refused.value.message
    if typed == "Starry Night":
        assert refused.value.message.endswith("Try “starry-night”.")
    if typed in ("日本", "st\u0430rry"):
        assert "Try" not in refused.value.message  # nothing usable is left to offer


def test_slug_makes_a_name_of_what_it_can() -> None:
    assert slug("  The Starry Night (1889)! ") == "the-starry-night-1889"
    assert slug("***") == ""


async def test_add_find_list_and_remove(library: StyleLibrary, data_dir: Path) -> None:
    style = await add(library, "Starry-Night")
    assert style == library.get("discord", "g1", "STARRY-NIGHT")
    assert style.name == "starry-night"
    assert Path(style.painting_path).read_bytes() == STARRY
    assert Path(style.painting_path).parent.parent == data_dir / "styles"
    thumbnail = Path(style.thumbnail_path)
    with Image.open(thumbnail) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) <= 256
    assert thumbnail.stat().st_mode & 0o777 == 0o600
    await add(library, "scream", SCREAM)
    # Per community: another server (or platform) has its own names.
    await add(library, "scream", SCREAM, community="g2")
    await add(library, "scream", SCREAM, platform="telegram")
    assert library.names("discord", "g1") == ["scream", "starry-night"]
    assert library.names("discord", "g1", "ni") == ["starry-night"]
    assert library.names("discord", "g1", "s") == ["scream", "starry-night"]
    styles, pages = library.page("discord", "g1", 0, size=1)
    assert [s.name for s in styles] == ["scream"] and pages == 2

    removed = await library.remove("discord", "g1", "starry-night")
    assert removed.name == "starry-night"
    assert not Path(removed.painting_path).parent.exists()
    assert library.find("discord", "g1", "starry-night") is None
    assert library.names("discord", "g2") == ["scream"]


async def test_what_an_add_refuses(library: StyleLibrary, data_dir: Path) -> None:
    await add(library, "starry")
    with pytest.raises(StyleExists, match="There is already a style called “starry” here"):
        await add(library, "Starry", SCREAM)
    with pytest.raises(StyleExists, match="That painting is already saved here as “starry”"):
        await add(library, "again", STARRY)
    with pytest.raises(InvalidImage, match="painting"):
        await add(library, "broken", b"not an image at all, just text" * 3)
    with pytest.raises(BadStyleName):
        await add(library, "no spaces please")
    # Nothing half-made stays behind: one style folder, no staging folders.
    assert [p.name for p in (data_dir / "styles").iterdir()] == ["1"]


async def test_a_full_library_refuses_before_the_download(
    store: Store, data_dir: Path, service: PaintService, clock: FakeTime
) -> None:
    library = StyleLibrary(
        store=store, data_dir=data_dir, check=service.check_image, clock=clock, max_styles=1
    )
    await add(library, "one")
    with pytest.raises(LibraryFull, match=r"This library is full \(1 style\)"):
        library.check_new("discord", "g1", "two")


async def test_a_missing_style_names_the_close_ones(library: StyleLibrary) -> None:
    await add(library, "starry-night")
    with pytest.raises(NoSuchStyle) as near:
        library.get("discord", "g1", "stary-night")
    assert near.value.message == (
        "There is no style called “stary-night” here. Did you mean “starry-night”?"
    )
    with pytest.raises(NoSuchStyle) as far:
        library.get("discord", "g1", "monet")
    assert far.value.message.endswith("/style list shows the saved ones.")


async def test_the_contact_sheet_shows_every_style_of_the_page(library: StyleLibrary) -> None:
    await add(library, "red", png_bytes((64, 64), (230, 20, 20)))
    await add(library, "blue", png_bytes((64, 64), (20, 20, 230)))
    styles, _ = library.page("discord", "g1", 0)

    sheet = await library.sheet(styles)

    with Image.open(io.BytesIO(sheet)) as img:
        pixels = img.convert("RGB")
        assert img.format == "JPEG"
        # Alphabetical: blue first, then red, one tile each.
        first, second = pixels.getpixel((12 + 96, 12 + 96)), pixels.getpixel((12 + 204 + 96, 108))
        assert first[2] > 180 and first[0] < 80
        assert second[0] > 180 and second[2] < 80


async def test_a_style_removed_while_its_job_waits_still_paints(
    library: StyleLibrary, service: PaintService, fake_engine: FakeEngine
) -> None:
    style = await add(library, "starry")
    painting = await library.painting(style)
    first = await service.submit(request("a", painting))  # runs
    waiting = await service.submit(request("b", painting))  # waits behind it
    assert waiting.state is JobState.QUEUED

    await library.remove("discord", "g1", "starry")
    assert not Path(style.painting_path).exists()

    fake_engine.finish(await fake_engine.wait_started())
    assert await fake_engine.wait_started() == waiting.id
    assert Path(fake_engine.seen[-1].painting_path).read_bytes() == STARRY  # its own copy
    finished = asyncio.Event()

    async def listen(event: JobEvent) -> None:
        if isinstance(event, Finished) and event.job.id == waiting.id:
            finished.set()

    service.add_listener(listen)
    fake_engine.finish(waiting.id)
    await asyncio.wait_for(finished.wait(), 10)
    assert service.get(waiting.id).state is JobState.DONE
    assert service.get(first.id).state is JobState.DONE


def request(user: str, painting: bytes) -> PaintRequest:
    return PaintRequest(
        platform="discord",
        chat_id="c1",
        user_id=user,
        user_name=user,
        photo=jpeg_bytes((48, 40)),
        painting=painting,
        painting_name="starry",
    )


async def test_a_closed_challenge_gives_its_painting_once_named_after_its_title(
    store: Store,
    data_dir: Path,
    service: PaintService,
    library: StyleLibrary,
    clock: FakeTime,
) -> None:
    challenges = Challenges(
        store=store,
        service=service,
        data_dir=data_dir,
        limits=Limits(),
        clock=clock,
        sleep=clock.sleep,
        on_ended=library.keep,
    )
    await challenges.start()
    await add(library, "starry-photos", SCREAM)  # the title's name is taken already
    opened = await challenges.acreate(
        platform="discord",
        community_id="g1",
        chat_id="c1",
        title="Starry photos!",
        painting=STARRY,
        painting_name="starry.png",
        organiser_id="o1",
        organiser_name="Olga",
        duration=DAY,
    )
    await challenges.end(opened.id, by="o1")
    await challenges.drained()

    kept = library.get("discord", "g1", "starry-photos-2")
    assert Path(kept.painting_path).read_bytes() == STARRY
    assert (kept.challenge_id, kept.added_by, kept.added_by_name) == (opened.id, "o1", "Olga")

    # Removed by an organiser, it does not come back at the next start.
    await library.remove("discord", "g1", "starry-photos-2")
    await challenges.close()
    again = Challenges(
        store=store,
        service=service,
        data_dir=data_dir,
        limits=Limits(),
        clock=clock,
        sleep=clock.sleep,
        on_ended=library.keep,
    )
    await again.start()
    await again.drained()
    assert library.names("discord", "g1") == ["starry-photos"]
    await again.close()


async def test_a_challenge_closed_while_the_bot_was_stopping_is_kept_at_the_next_start(
    store: Store,
    data_dir: Path,
    service: PaintService,
    library: StyleLibrary,
    clock: FakeTime,
) -> None:
    # Without the hook (as if the bot stopped before it ran), a challenge closes...
    plain = Challenges(
        store=store, data_dir=data_dir, service=service, limits=Limits(), clock=clock
    )
    await plain.start()
    kept, cancelled = [
        await plain.acreate(
            platform="telegram",
            community_id=chat,
            chat_id=chat,
            title=title,
            painting=painting,
            painting_name="p.png",
            organiser_id="o1",
            organiser_name="Olga",
            duration=DAY,
        )
        for chat, title, painting in (("-1", "Blue hour", STARRY), ("-2", "Gone", SCREAM))
    ]
    await plain.end(kept.id, by="o1")
    await plain.cancel(cancelled.id, by="o1")
    await plain.drained()
    await plain.close()
    assert plain.get(cancelled.id).state is ChallengeState.CANCELLED

    # ...and the next start hands it over; a cancelled one gives nothing.
    hooked = Challenges(
        store=store,
        data_dir=data_dir,
        service=service,
        limits=Limits(),
        clock=clock,
        on_ended=library.keep,
    )
    await hooked.start()
    await hooked.drained()
    assert library.names("telegram", "-1") == ["blue-hour"]
    assert library.names("telegram", "-2") == []
    await hooked.close()


def test_the_table_is_made_once_by_the_store_migrations(
    store: Store, data_dir: Path, service: PaintService
) -> None:
    StyleLibrary(store=store, data_dir=data_dir, check=service.check_image)
    StyleLibrary(store=store, data_dir=data_dir, check=service.check_image)  # a restart
    assert store.get_meta("schema.styles") == "1"
    tables = {r[0] for r in store.connection.execute("SELECT name FROM sqlite_master")}
    assert {"styles", "style_sources"} <= tables


async def test_saved_paintings_are_kept_warm_in_the_engine(
    store: Store, data_dir: Path, service: PaintService, clock: FakeTime
) -> None:
    """The keep-warm hook: every saved painting at start, a new one when added, none once
    removed; the host's default quality."""
    engine = FakeEngine()
    library = StyleLibrary(
        store=store,
        data_dir=data_dir,
        check=service.check_image,
        clock=clock,
        keep_warm=engine,
        warm_quality="draft",
    )
    starry = await add(library, "starry")
    scream = await add(library, "scream", SCREAM, community="g2")
    assert engine.pins == {starry.painting_path: "draft", scream.painting_path: "draft"}
    await library.remove("discord", "g1", "starry")
    assert engine.pins == {scream.painting_path: "draft"}

    # A restart: a new library over the same table pins what is saved, of every community.
    restarted = FakeEngine()
    again = StyleLibrary(
        store=store, data_dir=data_dir, check=service.check_image, keep_warm=restarted
    )
    assert again.keep_all_warm() == 1
    assert restarted.pins == {scream.painting_path: ""}
