"""What each scale pulls the canvases towards: the photos' features at the content layer and
the paintings' Gram matrices at the style layers.

Content features are computed for a whole batch at once, the way its canvases' features are
(padded, masked, in the same precision and layout), so the two compare like for like. Style
targets are computed per painting, alone, under ``torch.inference_mode`` and kept in the style
cache (``style_cache.py``): a painting used again at the same size is analysed once. A blend of
two paintings mixes their cached Gram matrices per job (:func:`blend_grams`), so blended jobs
batch like any others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from engine import schedule
from engine.batch import Layout, Region
from engine.colour import match_luminance, rgb_to_ycbcr, to_tensor
from engine.device import autocast_dtype
from engine.easel import Easel
from engine.losses import gram_matrix
from engine.paint_settings import PaintSettings
from engine.style_cache import StyleCache, StyleKey
from engine.vgg import VGGFeatures, min_input_side
from engine.workspace import Shape, network_features


def content_features(
    net: VGGFeatures, easels: list[Easel], layout: Layout, shape: Shape, region: Region | None
) -> Tensor:
    """The photos' features at the content layer for a batch, (B, C, h, w) float32."""
    layer = easels[0].settings.content_layer
    with torch.inference_mode():
        photos = layout.pad([easel.content_input() for easel in easels])
        feats = network_features(
            net,
            photos,
            autocast_to=shape.autocast,
            channels_last=shape.channels_last,
            region=region,
            mixed=shape.mixed,
        )
        return feats[layer].float()


@dataclass(frozen=True)
class Look:
    """What a painting's style targets depend on besides the painting: the settings, with
    ``keep_colors`` the photo's luminance (mean, std), the canvas's long side, and where and
    how the network runs."""

    settings: PaintSettings
    luminance: tuple[float, float] | None
    long_side: int
    device: torch.device
    channels_last: bool


def style_grams(
    net: VGGFeatures,
    easel: Easel,
    scale: schedule.Scale,
    cache: StyleCache,
    device: torch.device,
    channels_last: bool,
) -> dict[str, Tensor]:
    """The style target of ``easel`` for a canvas of ``scale``, (1, C, C) per style layer.

    One painting: its Gram matrices. Two (a blend): the weighted mix of both paintings' Gram
    matrices, ``settings.blend`` percent of the second (as jcjohnson's style_blend_weights, with
    two weights summing to one). Each painting's matrices are cached on their own, so a blend
    shares them with every other use of either painting; a painting weighted 0 is not analysed.
    """
    side = max(scale.width, scale.height)
    look = Look(easel.settings, easel.luminance, side, device, channels_last)
    second = easel.painting2
    weight = easel.settings.blend / 100 if second is not None else 0.0
    if second is None or weight == 0:
        return painting_grams(net, easel.painting, easel.digest, look, cache)
    if weight == 1:
        return painting_grams(net, second, easel.digest2, look, cache)
    first = painting_grams(net, easel.painting, easel.digest, look, cache)
    other = painting_grams(net, second, easel.digest2, look, cache)
    return blend_grams(first, other, weight)


def blend_grams(
    first: Mapping[str, Tensor], second: Mapping[str, Tensor], weight: float
) -> dict[str, Tensor]:
    """``(1 - weight) · first + weight · second`` per layer: the style target of a blend."""
    return {layer: first[layer] * (1 - weight) + second[layer] * weight for layer in first}


def painting_grams(
    net: VGGFeatures, painting: Image.Image, digest: str, look: Look, cache: StyleCache
) -> dict[str, Tensor]:
    """One painting's Gram matrices as ``look`` asks, (1, C, C) per style layer (cached).

    ``digest`` is ``style_cache.painting_digest(painting)``; it keys the cache."""
    s = look.settings
    device = look.device
    pw, ph = painting_size(painting.size, s, look.long_side)
    dtype = autocast_dtype(device, s.precision)
    key: StyleKey = (
        digest,
        pw,
        ph,
        tuple(s.style_layers),
        s.pooling,
        look.luminance,
        str(dtype),
        str(device),
    )
    cached = cache.get(key)
    if cached is not None:
        return cached
    resized = painting.resize((pw, ph), Image.Resampling.LANCZOS, reducing_gap=3.0)
    with torch.inference_mode():
        x = to_tensor(resized, device)
        if look.luminance is not None:
            x = match_luminance(rgb_to_ycbcr(x)[:, :1], *look.luminance)
        feats = network_features(net, x, autocast_to=dtype, channels_last=look.channels_last)
        grams = {layer: gram_matrix(feats[layer]) for layer in s.style_layers}
    # Clone outside inference mode: inference tensors may not take part in autograd.
    grams = {k: v.clone() for k, v in grams.items()}
    cache.put(key, grams)
    return grams


def painting_size(
    size: tuple[int, int], settings: PaintSettings, long_side: int
) -> tuple[int, int]:
    """The painting's size for a canvas whose long side is ``long_side``: the canvas's long side
    times the brush scale.

    Only the canvas's long side counts (not its area or aspect ratio), so photos of any shape
    painted at one size share the painting's cached style targets.
    """
    pw, ph = size
    factor = settings.brush_scale * long_side / max(pw, ph)
    smallest = min_input_side(settings.style_layers)
    factor = max(factor, smallest / min(pw, ph))
    return max(smallest, round(pw * factor)), max(smallest, round(ph * factor))
