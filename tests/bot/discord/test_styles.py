"""The style library on Discord: /style add|remove|list, /paint style:, and the "Paint with
Atelier" message command, through the simulated Discord (simcord) and the real service, store
and sandbox (contact sheets are drawn in its child process)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
import simcord
from PIL import Image

from bot import errors
from bot.challenges import NotOrganiser
from bot.jobs import JobState
from bot.settings import Limits
from bot.style_rules import BadStyleName, LibraryFull, NoSuchStyle, StyleExists
from tests.bot.discord.sim import DiscordSim, bot_messages, count_fetches, private, refused
from tests.fakes import jpeg_bytes, png_bytes

STARRY = ("starry.png", png_bytes((64, 48), (20, 40, 160)))
SCREAM = ("scream.jpg", jpeg_bytes((48, 64), (200, 90, 20)))
PHOTO = ("cat.jpg", jpeg_bytes((64, 48), (120, 120, 120)))


@pytest.fixture
def limits() -> Limits:
    return Limits(per_member=3, max_input_bytes=200_000)


async def add_style(
    sim: DiscordSim,
    who: simcord.MemberActor,
    channel: simcord.ChannelHandle,
    name: str,
    painting: tuple[str, bytes] = STARRY,
) -> simcord.InteractionResult:
    result = await who.slash(channel, "style add", name=name, painting=painting)
    await sim.settle()
    return result


async def test_organisers_add_and_remove_styles_members_list_them(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
    alice: simcord.MemberActor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fetched = count_fetches(sim, monkeypatch)
    # Only organisers add, and a member hears who may.
    denied = await add_style(sim, alice, channel, "starry")
    assert refused(sim, denied, NotOrganiser) == (
        "Only organisers (Manage Server or the Organisers role) can add styles."
    )
    # A bad name is refused before the painting is downloaded, with a name that would do.
    bad = await add_style(sim, olga, channel, "Starry Night")
    assert refused(sim, bad, BadStyleName) == (
        "**Starry Night** can't be a style name. Style names are 2 to 32 letters (a to z), "
        "digits, hyphens or underscores, like starry-night. Try **starry-night**."
    )
    assert fetched == []

    added = await add_style(sim, olga, channel, "Starry-Night")
    assert len(fetched) == 1  # the painting, once everything else had passed
    assert private(added) == (
        "Saved **starry-night** in this server's styles. Paint with it: "
        "`/paint style:starry-night`."
    )
    style = sim.styles.get("discord", str(guild.id), "starry-night")
    assert Path(style.painting_path).read_bytes() == STARRY[1]
    assert style.added_by == str(olga.id)

    taken = await add_style(sim, olga, channel, "starry-night", SCREAM)
    assert refused(sim, taken, StyleExists).startswith(
        "There is already a style called **starry-night** here."
    )
    twin = await add_style(sim, olga, channel, "again", STARRY)
    assert refused(sim, twin, StyleExists) == (
        "That painting is already saved here as **starry-night**."
    )
    broken = await add_style(sim, olga, channel, "broken", ("b.png", b"\x89PNG broken" * 10))
    assert "painting" in refused(sim, broken, errors.InvalidImage)
    await add_style(sim, olga, channel, "scream", SCREAM)

    # The list: one picture, the contact sheet, for everyone.
    listed = await alice.slash(channel, "style list")
    await sim.settle()
    assert listed.response is not None and listed.ephemeral
    assert listed.response.content == (
        "🎨 This server's styles: 2 styles. Paint with one by its name."
    )
    [sheet] = listed.response.attachments
    assert sheet.filename == "styles.jpg"
    with Image.open(io.BytesIO(await sheet.read())) as img:
        assert img.format == "JPEG" and img.width > 2 * 192
    assert bot_messages(channel) == []  # nothing posted for the whole channel

    # Removing: organisers only; autocomplete offers the names.
    offered = await olga.autocomplete(channel, "style remove", "name", "sc")
    assert [c["value"] for c in offered] == ["scream"]
    not_yours = await alice.slash(channel, "style remove", name="scream")
    await sim.settle()
    refused(sim, not_yours, NotOrganiser)
    gone = await olga.slash(channel, "style remove", name="scream")
    await sim.settle()
    assert private(gone) == (
        "Removed the style **scream**. Paintings already waiting with it still paint."
    )
    missing = await olga.slash(channel, "style remove", name="scream")
    await sim.settle()
    assert refused(sim, missing, NoSuchStyle) == (
        "There is no style called **scream** here. /style list shows the saved ones."
    )


async def test_the_list_is_paged_with_buttons(
    sim: DiscordSim,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
    alice: simcord.MemberActor,
) -> None:
    for number in range(13):  # one more than a page
        colour = (number * 18, 60, 200 - number * 12)
        await add_style(
            sim,
            olga,
            channel,
            f"style-{number:02d}",
            (f"{number}.png", png_bytes((40, 40), colour)),
        )

    first = await alice.slash(channel, "style list")
    await sim.settle()
    assert first.response is not None
    assert first.response.content.startswith("🎨 This server's styles: 13 styles, page 1 of 2.")
    labels = [c["components"][i]["label"] for c in first.response.components for i in range(2)]
    assert labels == ["Previous", "Next"]
    pressed = await alice.click(first.response.message, label="Next")
    await sim.settle()
    assert pressed.response is not None
    assert pressed.response.content.startswith("🎨 This server's styles: 13 styles, page 2 of 2.")
    late = await alice.slash(channel, "style list", page=5)
    await sim.settle()
    assert private(late) == "There are only 2 pages of styles."


async def test_an_empty_library_says_how_to_fill_it(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    empty = await alice.slash(channel, "style list")
    await sim.settle()
    assert private(empty) == (
        "No styles are saved in this server yet. Organisers add one with /style add."
    )


async def test_a_full_library_refuses_before_the_download(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
) -> None:
    sim.styles.max_styles = 1
    await add_style(sim, olga, channel, "one")
    downloads = len(sim.requests("GET"))
    full = await add_style(sim, olga, channel, "two", SCREAM)
    assert refused(sim, full, LibraryFull) == (
        "This library is full (1 style). Remove one with /style remove first."
    )
    assert len(sim.requests("GET")) == downloads


async def test_paint_with_a_saved_style(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
    alice: simcord.MemberActor,
) -> None:
    await add_style(sim, olga, channel, "starry")
    await add_style(sim, olga, channel, "scream", SCREAM)
    offered = await alice.autocomplete(channel, "paint", "style", "s", photo=PHOTO)
    assert [c["value"] for c in offered] == ["scream", "starry"]

    result = await alice.slash(channel, "paint", photo=PHOTO, style="starry")
    await sim.settle()
    assert "in the queue" in private(result)
    job = await sim.running_job()
    assert Path(job.painting_path).read_bytes() == STARRY[1]
    assert job.painting_name == "starry"
    [status] = bot_messages(channel)
    assert "🖼️ starry" in (status.embeds[0].fields[0].value or "")


async def test_exactly_one_of_a_painting_and_a_style(
    sim: DiscordSim,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
    alice: simcord.MemberActor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await add_style(sim, olga, channel, "starry")
    fetched = count_fetches(sim, monkeypatch)
    both = await alice.slash(channel, "paint", photo=PHOTO, painting=SCREAM, style="starry")
    await sim.settle()
    assert refused(sim, both, errors.InvalidOptions) == (
        "Give either a painting or a saved style, not both. To blend the style with a "
        "painting, attach that painting as painting2."
    )
    neither = await alice.slash(channel, "paint", photo=PHOTO)
    await sim.settle()
    assert refused(sim, neither, errors.InvalidOptions) == (
        "Give a painting to take the style from, or a saved style "
        "(style: and a name from /style list)."
    )
    missing = await alice.slash(channel, "paint", photo=PHOTO, style="stary")
    await sim.settle()
    assert refused(sim, missing, NoSuchStyle) == (
        "There is no style called **stary** here. Did you mean **starry**?"
    )
    assert sim.service.overview().waiting == () and sim.service.overview().running is None
    assert fetched == []  # nothing was downloaded for any of them


async def test_a_style_removed_while_its_painting_waits_still_paints(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
    alice: simcord.MemberActor,
    bob: simcord.MemberActor,
) -> None:
    await add_style(sim, olga, channel, "starry")
    await alice.slash(channel, "paint", photo=PHOTO, painting=SCREAM)
    await sim.settle()
    first = await sim.running_job()
    await bob.slash(channel, "paint", photo=PHOTO, style="starry")
    await sim.settle()
    [waiting] = sim.service.overview().waiting
    assert waiting.painting_name == "starry"

    await olga.slash(channel, "style remove", name="starry")
    await sim.settle()
    assert sim.styles.find("discord", str(guild.id), "starry") is None

    await sim.finish(first.id)
    started = await sim.engine.wait_started(waiting.id)
    assert Path(sim.engine.seen[-1].painting_path).read_bytes() == STARRY[1]
    await sim.finish(started)
    assert sim.service.get(waiting.id).state is JobState.DONE
    result = bot_messages(channel)[-1]
    assert result.content.startswith(bob.mention) and result.attachments


# ----------------------------------------------------------------------------------------------
# Paint with Atelier (the message command)


async def test_paint_with_atelier_on_a_message_with_a_saved_style(
    sim: DiscordSim,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
    alice: simcord.MemberActor,
    bob: simcord.MemberActor,
) -> None:
    await add_style(sim, olga, channel, "starry")
    posted = await alice.send(channel, "my cat", attachments=[PHOTO])

    form = await bob.context_menu(channel, "Paint with Atelier", posted)
    await sim.settle()
    assert form.modal is not None and form.modal["title"] == "Paint with Atelier"
    submitted = await bob.submit_modal(form, {select_id(form): ["starry"]})
    await sim.settle()

    assert "in the queue" in private(submitted)
    job = await sim.running_job()
    assert job.user_id == str(bob.id)  # whoever asked; the photo is the message's image
    assert Path(job.photo_path).read_bytes() == PHOTO[1]
    assert Path(job.painting_path).read_bytes() == STARRY[1]
    assert job.photo_name == "cat.jpg" and job.painting_name == "starry"


async def test_paint_with_atelier_asks_for_a_painting_when_no_style_is_saved(
    sim: DiscordSim,
    channel: simcord.ChannelHandle,
    alice: simcord.MemberActor,
) -> None:
    posted = await alice.send(channel, "", attachments=[PHOTO])

    form = await alice.context_menu(channel, "Paint with Atelier", posted)
    await sim.settle()
    assert form.modal is not None
    assert select_ids(form) == []  # no saved style to offer: only the painting
    submitted = await alice.submit_modal(form, {upload_id(form): SCREAM})
    await sim.settle()

    assert "in the queue" in private(submitted)
    job = await sim.running_job()
    assert Path(job.painting_path).read_bytes() == SCREAM[1]
    assert job.painting_name == "scream.jpg"


async def test_paint_with_atelier_refusals(
    sim: DiscordSim,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
    alice: simcord.MemberActor,
) -> None:
    await add_style(sim, olga, channel, "starry")
    text_only = await alice.send(channel, "no picture here")
    nothing = await alice.context_menu(channel, "Paint with Atelier", text_only)
    await sim.settle()
    assert refused(sim, nothing, errors.InvalidImage) == (
        "That message holds no image to paint. Use Paint with Atelier on a message with a "
        "photo attached."
    )

    posted = await alice.send(channel, "", attachments=[PHOTO])
    form = await alice.context_menu(channel, "Paint with Atelier", posted)
    await sim.settle()
    both = await alice.submit_modal(form, {select_id(form): ["starry"], upload_id(form): SCREAM})
    await sim.settle()
    assert refused(sim, both, errors.InvalidOptions) == (
        "Give either a painting or a saved style, not both."
    )

    form = await alice.context_menu(channel, "Paint with Atelier", posted)
    await sim.settle()
    neither = await alice.submit_modal(form, {})
    await sim.settle()
    assert refused(sim, neither, errors.InvalidOptions) == (
        "Give a painting to take the style from, or a saved style (pick one in the form)."
    )
    assert sim.service.overview().running is None and sim.service.overview().waiting == ()


def _controls(form: simcord.InteractionResult) -> list[dict[str, object]]:
    assert form.modal is not None
    return [row["component"] for row in form.modal["components"]]


def select_ids(form: simcord.InteractionResult) -> list[str]:
    return [str(c["custom_id"]) for c in _controls(form) if c["type"] == 3]


def select_id(form: simcord.InteractionResult) -> str:
    [found] = select_ids(form)
    return found


def upload_id(form: simcord.InteractionResult) -> str:
    [found] = [str(c["custom_id"]) for c in _controls(form) if c["type"] == 19]
    return found


async def test_saved_styles_belong_to_a_server_not_a_direct_message(sim: DiscordSim) -> None:
    dora = sim.env.create_user("dora")
    result = await dora.slash("paint", photo=PHOTO, style="starry")
    await sim.settle()
    assert refused(sim, result, NoSuchStyle) == (
        "Saved styles belong to a server. In a direct message, attach a painting instead."
    )
    assert sim.service.overview().running is None


async def test_a_name_with_a_look_alike_letter_is_not_answered_with_a_mangled_one(
    sim: DiscordSim, channel: simcord.ChannelHandle, olga: simcord.MemberActor
) -> None:
    # "stаrry" with a Cyrillic а: offering "strry" (the letter silently dropped) would save a
    # style nobody can find; the rule alone is said.
    bad = await add_style(sim, olga, channel, "st\u0430rry")
    said = refused(sim, bad, BadStyleName)
    assert said.startswith("**st\u0430rry** can't be a style name. Style names are 2 to 32")
    assert "Try" not in said
    # Accents and full-width letters still fold to the name meant.
    accented = await add_style(sim, olga, channel, "Caf\u00e9 Noir")
    assert refused(sim, accented, BadStyleName).endswith("Try **cafe-noir**.")


async def test_a_painting_cut_short_is_refused_not_saved_for_everyone_to_fail_with(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
) -> None:
    # Its chunks are whole (so it passes the bot's header-only checks), its pixels are not:
    # saved, every painting in this style would fail in the engine.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 640, 480, 8, 2, 0, 0, 0)  # RGB, 8 bits
    rows = zlib.compress(bytes(100))  # a few rows' worth of the 480
    cut = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    added = await add_style(sim, olga, channel, "cut", ("cut.png", cut))
    assert refused(sim, added, errors.InvalidImage) == (
        "The painting file is damaged or incomplete. Try sending it again, or save it as PNG "
        "or JPEG first."
    )
    assert sim.styles.find("discord", str(guild.id), "cut") is None
