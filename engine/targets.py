"""What each scale pulls the canvases towards: the photos' features at the content layer and
the paintings' Gram matrices at the style layers.

Content features are computed for a whole batch at once, the way its canvases' features are
(padded, masked, in the same precision and layout), so the two compare like for like. Style
targets are computed per painting, alone, under ``torch.inference_mode`` and kept in the style
cache (``style_cache.py``): a painting used again at the same size is analysed once.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor

from engine import schedule
from engine.batch import Layout, Region
from engine.colour import match_luminance, rgb_to_ycbcr, to_tensor
from engine.device import autocast_dtype
from engine.easel import Easel
from engine.losses import gram_matrix
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


def style_grams(
    net: VGGFeatures,
    easel: Easel,
    scale: schedule.Scale,
    cache: StyleCache,
    device: torch.device,
    channels_last: bool,
) -> dict[str, Tensor]:
    """The painting's Gram matrices for a canvas of ``scale`` (cached), (1, C, C) each."""
    s = easel.settings
    pw, ph = painting_size(easel, scale)
    dtype = autocast_dtype(device, s.precision)
    key: StyleKey = (
        easel.digest,
        pw,
        ph,
        tuple(s.style_layers),
        s.pooling,
        easel.luminance,
        str(dtype),
        str(device),
    )
    cached = cache.get(key)
    if cached is not None:
        return cached
    resized = easel.painting.resize((pw, ph), Image.Resampling.LANCZOS, reducing_gap=3.0)
    with torch.inference_mode():
        x = to_tensor(resized, device)
        if easel.luminance is not None:
            x = match_luminance(rgb_to_ycbcr(x)[:, :1], *easel.luminance)
        feats = network_features(net, x, autocast_to=dtype, channels_last=channels_last)
        grams = {layer: gram_matrix(feats[layer]) for layer in s.style_layers}
    # Clone outside inference mode: inference tensors may not take part in autograd.
    grams = {k: v.clone() for k, v in grams.items()}
    cache.put(key, grams)
    return grams


def painting_size(easel: Easel, scale: schedule.Scale) -> tuple[int, int]:
    """The painting's size for this canvas: its long side is the canvas's times the brush scale.

    Only the canvas's long side counts (not its area or aspect ratio), so photos of any shape
    painted at one size share the painting's cached style targets.
    """
    pw, ph = easel.painting.size
    factor = easel.settings.brush_scale * max(scale.width, scale.height) / max(pw, ph)
    smallest = min_input_side(easel.settings.style_layers)
    factor = max(factor, smallest / min(pw, ph))
    return max(smallest, round(pw * factor)), max(smallest, round(ph * factor))
