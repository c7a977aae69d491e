"""The terms of the objective: Gram matrix, content, style and total-variation losses.

Normalisation (our choice, documented because papers and implementations all differ):

* Gram matrix: ``G = F Fᵀ / (C·H·W)`` for features F of shape (C, H·W), i.e. divided by the
  number of elements of the feature map, so Gram matrices of the same painting at different sizes
  are comparable (this is what makes cached targets reusable across canvas sizes and lets the
  painting be analysed at a different size from the canvas, which is how brush size works).
  Gatys et al. divide the squared error by 4·N²·M² instead; the difference is a constant per layer.
* Content loss: mean squared error of the features (Gatys use half the *sum*, which grows with the
  image size and would make the content/style balance depend on the scale).
* Style loss: per layer, the mean squared error between Gram matrices; layers are combined with
  weights (equal by default, as Gatys' w_l = 1/5).
* Total variation: mean of squared differences between neighbouring pixels (Mahendran and
  Vedaldi's β = 2 TV), in units of the [0, 1] image.

Gram matrices and losses are always computed in float32, also when the features are bf16/fp16
under autocast: the sums over H·W terms lose too much in half precision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def gram_matrix(features: Tensor) -> Tensor:
    """(B, C, H, W) features -> (B, C, C) float32 Gram matrices divided by C·H·W."""
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w).float()  # (B, C, N)
    with torch.autocast(device_type=f.device.type, enabled=False):
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """Mean squared difference between features and the photo's features (float32 scalar)."""
    return (features.float() - target.float()).pow(2).mean()


def style_loss(
    grams: Mapping[str, Tensor], targets: Mapping[str, Tensor], weights: Mapping[str, float]
) -> Tensor:
    """Weighted sum over layers of the mean squared difference between Gram matrices."""
    total: Tensor | None = None
    for layer, weight in weights.items():
        term = (grams[layer] - targets[layer]).pow(2).mean() * weight
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no style layers")
    return total


def tv_loss(image: Tensor) -> Tensor:
    """Mean squared difference between horizontally and vertically adjacent pixels, (B, C, H, W)."""
    x = image.float()
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    return dx + dy


def range_loss(image: Tensor) -> Tensor:
    """Mean squared excess of pixel values outside [0, 1] (zero for a valid image)."""
    x = image.float()
    return ((-x).clamp(min=0).pow(2) + (x - 1).clamp(min=0).pow(2)).mean()


@dataclass(frozen=True)
class Targets:
    """What the canvas is pulled towards at one scale: photo features and painting Gram matrices."""

    content: Tensor  # (1, C, H, W) features of the photo at the content layer
    grams: Mapping[str, Tensor]  # layer -> (1, C, C) float32 Gram matrix of the painting


@dataclass(frozen=True)
class Objective:
    """``content_weight·content + style_weight·style + tv_weight·tv`` for one scale."""

    content_layer: str
    style_weights: Mapping[str, float]  # layer -> weight within the style term
    content_weight: float
    style_weight: float
    tv_weight: float

    @classmethod
    def create(
        cls,
        *,
        content_layer: str,
        style_layers: Sequence[str],
        layer_weights: Sequence[float] | None,
        content_weight: float,
        style_weight: float,
        tv_weight: float,
    ) -> Objective:
        if layer_weights is None:
            layer_weights = [1.0 / len(style_layers)] * len(style_layers)
        if len(layer_weights) != len(style_layers):
            raise ValueError("one weight per style layer is needed")
        return cls(
            content_layer=content_layer,
            style_weights=dict(zip(style_layers, layer_weights, strict=True)),
            content_weight=content_weight,
            style_weight=style_weight,
            tv_weight=tv_weight,
        )

    def terms(
        self, features: Mapping[str, Tensor], canvas: Tensor, targets: Targets
    ) -> dict[str, Tensor]:
        """The weighted terms and their sum under ``"total"`` (float32 scalars)."""
        grams = {layer: gram_matrix(features[layer]) for layer in self.style_weights}
        parts = {
            "content": self.content_weight
            * content_loss(features[self.content_layer], targets.content),
            "style": self.style_weight * style_loss(grams, targets.grams, self.style_weights),
        }
        if self.tv_weight:
            parts["tv"] = self.tv_weight * tv_loss(canvas)
        parts["total"] = torch.stack(list(parts.values())).sum()
        return parts
