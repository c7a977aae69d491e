"""VGG-19 as a feature extractor with named layers (Simonyan and Zisserman, 2014).

The network is torchvision's ``vgg19().features``, truncated after the deepest layer in use,
frozen and in eval mode. Layers are addressed by name (``relu4_2``); the raw indices into
``features`` live in :data:`LAYERS` and nowhere else.

Pooling: Gatys et al. (2016) replace max pooling by average pooling for "slightly more appealing
results". We keep **max pooling by default**: the ImageNet weights were trained with it, so
feature magnitudes (and the loss weights calibrated on them, see ``paint_settings.py``) stay
where the network expects them. ``pooling="avg"`` is available; as in the paper it is not rescaled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import torch
from torch import Tensor, nn

from engine.paint_settings import CONTENT_LAYER, STYLE_LAYERS

# Index of each named layer in torchvision's vgg19().features.
LAYERS: Final[dict[str, int]] = {
    "conv1_1": 0, "relu1_1": 1, "conv1_2": 2, "relu1_2": 3, "pool1": 4,
    "conv2_1": 5, "relu2_1": 6, "conv2_2": 7, "relu2_2": 8, "pool2": 9,
    "conv3_1": 10, "relu3_1": 11, "conv3_2": 12, "relu3_2": 13,
    "conv3_3": 14, "relu3_3": 15, "conv3_4": 16, "relu3_4": 17, "pool3": 18,
    "conv4_1": 19, "relu4_1": 20, "conv4_2": 21, "relu4_2": 22,
    "conv4_3": 23, "relu4_3": 24, "conv4_4": 25, "relu4_4": 26, "pool4": 27,
    "conv5_1": 28, "relu5_1": 29, "conv5_2": 30, "relu5_2": 31,
    "conv5_3": 32, "relu5_3": 33, "conv5_4": 34, "relu5_4": 35, "pool5": 36,
}  # fmt: skip

POOLINGS: Final = ("max", "avg")

# torchvision's ImageNet statistics; the network takes RGB in [0, 1] normalised by them.
IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
IMAGENET_STD: Final = (0.229, 0.224, 0.225)


def layer_index(name: str) -> int:
    try:
        return LAYERS[name]
    except KeyError:
        raise ValueError(f"unknown VGG-19 layer {name!r}; known: {', '.join(LAYERS)}") from None


def min_input_side(layers: Iterable[str]) -> int:
    """The smallest input side that still leaves at least one pixel at every requested layer."""
    deepest = max(layer_index(n) for n in layers)
    pools = sum(1 for name, i in LAYERS.items() if name.startswith("pool") and i < deepest)
    return 2**pools


class VGGFeatures(nn.Module):
    """``forward(x)`` maps RGB in [0, 1], shape (B, 3, H, W), to ``{layer name: features}``.

    Built from a torchvision-format state dict (``features.N.weight`` keys). The tensors of
    ``state`` are used as they are (``assign=True``), so several extractors (other layers or
    pooling) can share one copy of the weights.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        state: Mapping[str, Tensor],
        *,
        layers: Iterable[str] = (CONTENT_LAYER, *STYLE_LAYERS),
        pooling: str = "max",
    ) -> None:
        super().__init__()
        from torchvision.models import vgg19

        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.layers: tuple[str, ...] = tuple(sorted(set(layers), key=layer_index))
        if not self.layers:
            raise ValueError("at least one layer is needed")
        self.pooling = pooling
        self._wanted = {LAYERS[n]: n for n in self.layers}
        last = max(self._wanted)

        # Build the architecture on the meta device (no 548 MB allocation, no random init), keep
        # only what the deepest requested layer needs, then take the given tensors as parameters.
        with torch.device("meta"):
            body = vgg19(weights=None).features[: last + 1]
        for i, module in enumerate(body):
            if isinstance(module, nn.MaxPool2d) and pooling == "avg":
                body[i] = nn.AvgPool2d(kernel_size=2, stride=2)
            elif isinstance(module, nn.ReLU) and (i - 1) in self._wanted:
                # An in-place ReLU would overwrite a requested conv output.
                body[i] = nn.ReLU(inplace=False)
        state = {k.removeprefix("features."): v for k, v in state.items()}
        needed = {k for k in body.state_dict(keep_vars=True)}
        missing = sorted(needed - set(state))
        if missing:
            from engine.weights import FIX_HINT, WeightsError

            lacking = ", ".join(f"features.{k}" for k in missing[:4])
            raise WeightsError(f"the VGG-19 weights lack {lacking}. {FIX_HINT}")
        try:
            body.load_state_dict({k: state[k] for k in needed}, strict=True, assign=True)
        except RuntimeError as exc:
            from engine.weights import FIX_HINT, WeightsError

            raise WeightsError(
                f"the VGG-19 weights do not fit the network ({exc}). {FIX_HINT}"
            ) from exc
        body.requires_grad_(False)
        self.body = body.eval()
        pools = [i for i, m in enumerate(body) if isinstance(m, nn.MaxPool2d | nn.AvgPool2d)]
        # Poolings passed before each requested layer: which resolution (mask, count) it has.
        self.levels: dict[str, int] = {
            name: sum(1 for p in pools if p < index) for index, name in self._wanted.items()
        }
        self.depth = len(pools)  # poolings in the network: masks are needed for 0 .. depth
        device = next(body.parameters()).device
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> VGGFeatures:
        # Frozen: stays in eval mode whatever the caller asks (it has no dropout or batch norm
        # anyway, but a stray .train() should not change that promise).
        return super().train(False)

    def forward(self, x: Tensor, masks: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
        """Features of ``x`` at the requested layers.

        ``masks`` (for a padded batch, see ``batch.py``) are (B, 1, H >> k, W >> k) for k = 0 ..
        :attr:`depth`: everything outside each sample's region is zeroed after the input's
        normalisation, every convolution and every pooling, so each sample's features inside
        its region are those it has alone. The masks are applied in place on tensors whose
        backward does not need them (a convolution's or pooling's output), so they cost no memory.
        """
        h = (x - self.mean) / self.std
        level = 0
        if masks is not None:
            h.mul_(masks[0])
        out: dict[str, Tensor] = {}
        for i, module in enumerate(self.body):
            h = module(h)
            if masks is not None:
                if isinstance(module, nn.Conv2d):
                    h.mul_(masks[level])
                elif isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
                    level += 1
                    h.mul_(masks[level])
            name = self._wanted.get(i)
            if name is not None:
                out[name] = h
        return out
