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

Every term is per sample, shape (B,): in a batch each job has its own objective (and its own
weights). In a padded batch (``batch.py``) the features outside a job's region are zero, so
sums over the whole tensor are sums over the region; the terms divide by the region's size
(``count``) instead of the tensor's, and TV and the range penalty look only inside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.batch import Region


def gram_matrix(features: Tensor, count: Tensor | None = None) -> Tensor:
    """(B, C, H, W) features -> (B, C, C) float32 Gram matrices divided by C·H·W.

    With ``count`` (B,), the number of positions inside each sample's region, divided by C·count
    instead; features outside the region must be zero (the masked network makes them so).
    """
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w).float()  # (B, C, N)
    with torch.autocast(device_type=f.device.type, enabled=False):
        gram = torch.bmm(f, f.transpose(1, 2))
    if count is None:
        return gram / (c * h * w)
    return gram / (c * count).view(b, 1, 1)


def content_loss(features: Tensor, target: Tensor, count: Tensor | None = None) -> Tensor:
    """Mean squared difference between features and the photo's features, per sample (B,).

    With ``count`` (B,), the mean over each sample's region (both must be zero outside it).
    """
    b, c = features.shape[:2]
    squared = (features.float() - target.float()).pow(2).reshape(b, -1)
    if count is None:
        return squared.mean(dim=1)
    return squared.sum(dim=1) / (c * count)


def style_loss(
    grams: Mapping[str, Tensor], targets: Mapping[str, Tensor], weights: Mapping[str, float]
) -> Tensor:
    """Weighted sum over layers of the mean squared difference between Gram matrices, (B,)."""
    total: Tensor | None = None
    for layer, weight in weights.items():
        diff = grams[layer] - targets[layer]
        term = diff.pow(2).flatten(1).mean(dim=1) * weight
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no style layers")
    return total


def tv_loss(image: Tensor, region: Region | None = None) -> Tensor:
    """Mean squared difference between horizontally and vertically adjacent pixels, (B,).

    With ``region``, only pairs with both pixels inside a sample's region count.
    """
    x = image.float()
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2)
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2)
    if region is None:
        return dx.flatten(1).mean(dim=1) + dy.flatten(1).mean(dim=1)
    across = (dx * region.across).flatten(1).sum(dim=1) / region.across_count
    down = (dy * region.down).flatten(1).sum(dim=1) / region.down_count
    return across + down


def range_loss(image: Tensor, region: Region | None = None) -> Tensor:
    """Mean squared excess of pixel values outside [0, 1] (zero for a valid image), (B,)."""
    x = image.float()
    excess = (-x).clamp(min=0).pow(2) + (x - 1).clamp(min=0).pow(2)
    if region is None:
        return excess.flatten(1).mean(dim=1)
    return (excess * region.pixels).flatten(1).sum(dim=1) / region.pixel_count


@dataclass(frozen=True)
class Targets:
    """What the canvases are pulled towards at one scale: photo features and painting Grams."""

    content: Tensor  # (B, C, H, W) features of the photos at the content layer
    grams: Mapping[str, Tensor]  # layer -> (B, C, C) float32 Gram matrices of the paintings


@dataclass(frozen=True)
class Objective:
    """``content_weight·content + style_weight·style + tv_weight·tv`` for one scale, per sample.

    The weights are numbers, or (B,) tensors of one weight per job in a batch. ``use_tv`` says
    whether the TV term is computed at all (not when every job's TV weight is zero).
    """

    content_layer: str
    style_weights: Mapping[str, float]  # layer -> weight within the style term
    content_weight: float | Tensor
    style_weight: float | Tensor
    tv_weight: float | Tensor
    use_tv: bool = True

    @classmethod
    def create(
        cls,
        *,
        content_layer: str,
        style_layers: Sequence[str],
        layer_weights: Sequence[float] | None,
        content_weight: float | Tensor,
        style_weight: float | Tensor,
        tv_weight: float | Tensor,
        use_tv: bool | None = None,
    ) -> Objective:
        if layer_weights is None:
            layer_weights = [1.0 / len(style_layers)] * len(style_layers)
        if len(layer_weights) != len(style_layers):
            raise ValueError("one weight per style layer is needed")
        if use_tv is None:
            use_tv = bool(tv_weight) if not isinstance(tv_weight, Tensor) else True
        return cls(
            content_layer=content_layer,
            style_weights=dict(zip(style_layers, layer_weights, strict=True)),
            content_weight=content_weight,
            style_weight=style_weight,
            tv_weight=tv_weight,
            use_tv=use_tv,
        )

    def terms(
        self,
        features: Mapping[str, Tensor],
        canvas: Tensor,
        targets: Targets,
        region: Region | None = None,
        levels: Mapping[str, int] | None = None,
    ) -> dict[str, Tensor]:
        """The weighted terms and their sum under ``"total"``, each (B,) float32.

        In a padded batch, ``region`` holds the masks and ``levels`` maps each layer to its
        number of poolings (which of ``region.counts`` applies).
        """

        def count(layer: str) -> Tensor | None:
            if region is None:
                return None
            if levels is None:
                raise ValueError("a region needs the layers' levels")
            return region.counts[levels[layer]]

        grams = {layer: gram_matrix(features[layer], count(layer)) for layer in self.style_weights}
        content = content_loss(
            features[self.content_layer], targets.content, count(self.content_layer)
        )
        parts = {
            "content": self.content_weight * content,
            "style": self.style_weight * style_loss(grams, targets.grams, self.style_weights),
        }
        if self.use_tv:
            parts["tv"] = self.tv_weight * tv_loss(canvas, region)
        parts["total"] = torch.stack(list(parts.values())).sum(dim=0)
        return parts
