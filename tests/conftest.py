"""Fixtures shared by the test suite: random VGG-19 weights, small Pillow-made images, Redis.

The VGG-19 weights are seeded random numbers in torchvision's key format (``features.N.weight``),
initialised as torchvision initialises an untrained VGG (Kaiming normal, fan-out). Only the
``features`` part is built: the classifier would add 470 MB for nothing. Nothing in the engine
falls back to these; tests pass the file or the state dict in explicitly.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image, ImageDraw

from tests.redis_server import MISSING, RedisServer, ci

if TYPE_CHECKING:
    from torch import Tensor

    from tests.scaled import Agents

WEIGHTS_SEED = 1234


def random_vgg19_features(seed: int = WEIGHTS_SEED) -> dict[str, Tensor]:
    """A seeded random VGG-19 ``features`` state dict in torchvision's key format."""
    import torch
    from torch import nn
    from torchvision.models import vgg19

    with torch.device("meta"):
        layout = vgg19(weights=None).features  # architecture only, nothing allocated
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for index, module in enumerate(layout):
        if isinstance(module, nn.Conv2d):
            weight = torch.empty(module.weight.shape)
            nn.init.kaiming_normal_(
                weight, mode="fan_out", nonlinearity="relu", generator=generator
            )
            state[f"features.{index}.weight"] = weight
            state[f"features.{index}.bias"] = torch.zeros(module.out_channels)
    return state


@pytest.fixture(scope="session")
def vgg_state() -> dict[str, Tensor]:
    """The random VGG-19 features state dict (session-wide; do not modify it)."""
    return random_vgg19_features()


@pytest.fixture(scope="session")
def vgg_weights_path(
    tmp_path_factory: pytest.TempPathFactory, vgg_state: dict[str, Tensor]
) -> Path:
    """The random VGG-19 weights saved as a state-dict file, as ``--weights`` expects."""
    import torch

    path = tmp_path_factory.mktemp("vgg") / "vgg19-random.pth"
    torch.save(vgg_state, path)
    return path


def make_photo(width: int = 64, height: int = 48) -> Image.Image:
    """A 'photo': a smooth colour gradient with a few solid shapes on it."""
    img = Image.new("RGB", (width, height))
    img.putdata(
        [
            (int(255 * x / width), int(255 * y / height), int(255 * (1 - x / width) * 0.6 + 60))
            for y in range(height)
            for x in range(width)
        ]
    )
    draw = ImageDraw.Draw(img)
    draw.ellipse((width // 8, height // 6, width // 2, height * 2 // 3), fill=(240, 220, 40))
    draw.rectangle(
        (width * 5 // 8, height // 3, width * 7 // 8, height * 5 // 6), fill=(30, 40, 160)
    )
    return img


def make_painting(width: int = 56, height: int = 64, seed: int = 7) -> Image.Image:
    """A 'painting': saturated diagonal stripes with seeded noise, a palette unlike the photo's."""
    rng = random.Random(seed)
    palette = [(230, 40, 40), (250, 160, 20), (40, 180, 90), (150, 30, 200)]
    pixels = []
    for y in range(height):
        for x in range(width):
            r, g, b = palette[((x + 2 * y) // 6) % len(palette)]
            n = rng.randint(-40, 40)
            pixels.append(
                (max(0, min(255, r + n)), max(0, min(255, g + n)), max(0, min(255, b - n)))
            )
    img = Image.new("RGB", (width, height))
    img.putdata(pixels)
    return img


@pytest.fixture
def photo() -> Image.Image:
    return make_photo()


@pytest.fixture
def painting() -> Image.Image:
    return make_painting()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session. Missing: skipped locally, a failure under CI."""
    binary = RedisServer.find_binary()
    if binary is None:
        if ci():
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    server = RedisServer(tmp_path_factory.mktemp("redis"), binary)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    import redis

    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def agents(redis_url: str, tmp_path: Path) -> Iterator[Agents]:
    """GPU-host agents as processes on the test's Redis (``agents.start("A", "B")``), each
    painting with a scripted engine process; stopped at the end of the test."""
    from tests.scaled import Agents

    agents = Agents(redis_url, tmp_path / "agents")
    yield agents
    agents.stop_all()
