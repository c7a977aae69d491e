"""How results fit Discord's upload limit: re-encoded in the sandbox's child process."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from bot.discord.embeds import encode_for_upload
from bot.sandbox import Sandbox


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """A real sandbox; Pillow's decoders refuse to run in this process meanwhile."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image was decoded in the bot process")

    monkeypatch.setattr(Image, "open", refuse)
    return Sandbox()


def png_of(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def format_of(data: bytes) -> str:
    return "JPEG" if data.startswith(b"\xff\xd8") else "PNG" if data[:4] == b"\x89PNG" else "?"


async def test_result_too_large_for_the_upload_limit_becomes_a_jpeg(sandbox: Sandbox) -> None:
    # A photo-like picture: smooth gradients and a little grain, which JPEG handles well.
    grain = Image.effect_noise((320, 240), 24).convert("RGB")
    gradient = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
    png = png_of(Image.blend(gradient, grain, 0.3))
    same, name = await encode_for_upload(png, len(png), "abc", sandbox)
    assert same == png
    assert name == "atelier-abc.png"
    data, name = await encode_for_upload(png, len(png) // 3, "abc", sandbox)
    assert name == "atelier-abc.jpg"
    assert len(data) <= len(png) // 3
    assert format_of(data) == "JPEG"


async def test_a_noisy_result_still_fits_the_upload_limit(sandbox: Sandbox) -> None:
    noise = Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3))
    data, name = await encode_for_upload(png_of(noise), 120_000, "xyz", sandbox)
    assert name == "atelier-xyz.jpg"
    assert len(data) <= 120_000
    assert format_of(data) == "JPEG"
