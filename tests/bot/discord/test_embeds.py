"""How results fit Discord's upload limit."""

from __future__ import annotations

import io
import os
import re

from PIL import Image

from bot.discord.embeds import encode_for_upload

RELATIVE = re.compile(r"<t:\d+:R>")


def test_result_too_large_for_the_upload_limit_becomes_a_jpeg() -> None:
    # A photo-like picture: smooth gradients and a little grain, which JPEG handles well.
    grain = Image.effect_noise((320, 240), 24).convert("RGB")
    gradient = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
    picture = Image.blend(gradient, grain, 0.3)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    png = buffer.getvalue()
    same, name = encode_for_upload(png, len(png), "abc")
    assert same == png
    assert name == "atelier-abc.png"
    data, name = encode_for_upload(png, len(png) // 3, "abc")
    assert name == "atelier-abc.jpg"
    assert len(data) <= len(png) // 3
    assert Image.open(io.BytesIO(data)).format == "JPEG"


def test_a_noisy_result_still_fits_the_upload_limit() -> None:
    noise = Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    data, name = encode_for_upload(buffer.getvalue(), 120_000, "xyz")
    assert name == "atelier-xyz.jpg"
    assert len(data) <= 120_000
    assert Image.open(io.BytesIO(data)).format == "JPEG"
