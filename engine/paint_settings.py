"""Every default of a painting, in one frozen dataclass.

:class:`PaintSettings` is the single home of the engine's defaults; the CLI and the engine worker
build it with :meth:`PaintSettings.from_options` from the member-facing
:class:`protocol.PaintOptions` and the kind of device, and only then override what they expose.
The defaults a member can change are named once beside what they default and used here:
``protocol.DEFAULT_STRENGTH`` and ``DEFAULT_BRUSH``, ``schedule.DEFAULT_QUALITY`` and its preset.
Standard library only (the bot may import it without torch).

Loss weights are calibrated for torchvision's ImageNet VGG-19 (not for the random weights the tests
use), with the normalisation in ``losses.py``: content weight 1, style weight ``3e5`` at strength
5, doubling per strength step (a log scale: strength 1 is 1.9e4, 10 is 9.6e6). We reached that
figure by converting the defaults of jcjohnson/neural-style (content 5, style 100, Caffe VGG on
0-255 pixels, Gram matrices divided by C·H·W) to torchvision's normalised inputs, where features are
about 58 times smaller; the PyTorch tutorial's figure lands within the same decade.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

from engine import protocol, schedule

CONTENT_LAYER: Final = "relu4_2"  # Gatys et al. 2016
STYLE_LAYERS: Final = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
DEFAULT_DEVICE_KIND: Final = "cpu"
_DEFAULT_PRESET: Final = schedule.PRESETS[(schedule.DEFAULT_QUALITY, DEFAULT_DEVICE_KIND)]

STYLE_WEIGHT_AT_5: Final = 3e5
STRENGTH_FACTOR: Final = 2.0  # style weight multiplier per strength step

# Total variation, in content-weight units (content weight 1). Why 1.0 is mild, not dominant, on
# ImageNet weights (TV figures measured; VGG figures estimated, as no ImageNet weights are here):
# * TV (mean squared neighbour difference over both directions, [0, 1] pixels) is a property of
#   the pixels only: tubingen.jpg 0.0076 at 128 px and 0.0089 at 512 px, starry_night.jpg 0.02 to
#   0.03; a 2 px Gaussian blur takes the photo to 0.0004. At weight 1 the most blurring can ever
#   save is about 0.01.
# * Content (relu4_2 MSE) and style (3e5 x mean Gram MSE, relu1_1..relu5_1) are of order 1 to 10
#   during a run on ImageNet weights: the style weight was chosen to balance them (the PyTorch
#   tutorial, same normalisations: content 2 to 4 and weighted style 1 to 4). Blurring away a
#   painting's strokes costs more than that 0.01 in style alone, so TV only evens out pixel noise
#   the network does not see. By the conversion that gave the style weight, jcjohnson's
#   tv_weight 1e-3 (0.5 x the *sum* of squared differences of 0-255 pixels) is
#   97.5·H·W / (5·58²), about 1e3 here at 512 px: 1.0 is far milder than neural-style's default.
# * Random weights (tests, benches) are another matter: their features are about ten times
#   smaller (relu4_2 mean 0.05), content scales with their square and style with the fourth
#   power, so both fall to TV's size (0.001 content for that blur, 0.01 style photo against
#   painting, measured) and TV blurs. Set tv_weight=0 there (or scale content and style up);
#   do not tune this default on them.
TV_WEIGHT: Final = 1.0

# Brush size = how large the painting is analysed relative to the canvas (ratio of long sides):
# a larger painting image gives larger strokes and motifs on the canvas.
BRUSH_SCALES: Final[dict[str, float]] = {"small": 0.6, "medium": 1.0, "large": 1.5}

OPTIMIZERS: Final = ("lbfgs", "adam")
INITS: Final = ("photo", "noise", "colour")
PRECISIONS: Final = ("auto", "fp32", "tf32", "bf16", "fp16")

# Adam's step size (pixels are in [0, 1]) and betas. Less momentum than torch's (0.9, 0.999):
# chosen on tubingen.jpg x starry_night.jpg at 256 px from the recoloured photo (bench/, random
# weights), where after 26 iterations betas (0.8, 0.99) reached an objective 7% lower than
# torch's; step sizes 0.025 to 0.035 were within 1% of each other, 0.05 and up worse.
ADAM_LR: Final = 0.03
ADAM_BETAS: Final = (0.8, 0.99)

# Limits the engine enforces whatever the caller asks (it never trusts the bot).
MAX_LONG_SIDE: Final = 2048
MAX_TOTAL_STEPS: Final = 3000


def style_weight_for(strength: int) -> float:
    """Map the member-facing strength 1-10 to the style weight (log scale, doubling per step)."""
    if not protocol.STRENGTH_MIN <= strength <= protocol.STRENGTH_MAX:
        raise protocol.OptionError(
            f"strength {strength} is out of range: use "
            f"{protocol.STRENGTH_MIN} to {protocol.STRENGTH_MAX}"
        )
    return STYLE_WEIGHT_AT_5 * STRENGTH_FACTOR ** (strength - 5)


@dataclass(frozen=True)
class PaintSettings:
    """How to paint one picture. Build with :meth:`from_options`; change with :meth:`replace`."""

    # Size and schedule: the canvas long side and iterations per scale, coarsest first.
    long_side: int = _DEFAULT_PRESET.long_side
    steps: tuple[int, ...] = _DEFAULT_PRESET.steps
    quality: str = schedule.DEFAULT_QUALITY
    device_kind: str = DEFAULT_DEVICE_KIND
    # Network.
    content_layer: str = CONTENT_LAYER
    style_layers: tuple[str, ...] = STYLE_LAYERS
    layer_weights: tuple[float, ...] | None = None  # None: equal weights summing to 1
    pooling: str = "max"  # see vgg.py for why not the paper's average pooling
    # Objective.
    content_weight: float = 1.0
    style_weight: float = STYLE_WEIGHT_AT_5
    tv_weight: float = TV_WEIGHT  # see TV_WEIGHT
    # Member options.
    strength: int = protocol.DEFAULT_STRENGTH
    brush: str = protocol.DEFAULT_BRUSH
    keep_colors: bool = False
    seed: int | None = None
    blend: int = protocol.DEFAULT_BLEND  # percent of the second painting, when there is one
    # Optimiser.
    optimizer: str = "lbfgs"
    init: str = "photo"
    lbfgs_history: int = 50
    adam_lr: float = ADAM_LR
    adam_betas: tuple[float, float] = ADAM_BETAS
    range_weight: float = 1e3  # L-BFGS penalty on pixels outside [0, 1] (see stylize.py)
    # Device and reporting.
    precision: str = "auto"  # auto: bf16 mixed precision on CUDA where supported, else fp32
    preview_every: float = 4.0  # seconds between previews, 0 for none
    preview_side: int = 512

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_options(
        cls,
        options: protocol.PaintOptions,
        device_kind: str = DEFAULT_DEVICE_KIND,
        **overrides: object,
    ) -> PaintSettings:
        """Settings for a member's options on a kind of device (``cpu`` or ``gpu``)."""
        options.validate()
        if device_kind not in schedule.DEVICE_KINDS:
            raise protocol.OptionError(
                f"device kind must be one of {', '.join(schedule.DEVICE_KINDS)}"
            )
        preset = schedule.PRESETS[(options.quality, device_kind)]
        base = cls(
            long_side=preset.long_side,
            steps=preset.steps,
            quality=options.quality,
            device_kind=device_kind,
            optimizer=preset.optimizer,
            init=preset.init,
            style_weight=style_weight_for(options.strength),
            strength=options.strength,
            brush=options.brush,
            keep_colors=options.keep_colors,
            seed=options.seed,
            blend=options.blend,
        )
        return base.replace(**overrides) if overrides else base

    def replace(self, **changes: object) -> PaintSettings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def brush_scale(self) -> float:
        return BRUSH_SCALES[self.brush]

    @property
    def style_weights(self) -> dict[str, float]:
        """Each style layer's weight within the style term (equal, summing to 1, by default)."""
        layers = self.style_layers
        weights = self.layer_weights or [1.0 / len(layers)] * len(layers)
        return dict(zip(layers, weights, strict=True))

    @property
    def network(self) -> tuple[object, ...]:
        """What fixes the feature network: the layers in use and the pooling."""
        layers = (self.content_layer, *self.style_layers)
        return (tuple(sorted(set(layers))), self.pooling)

    @property
    def shared(self) -> tuple[object, ...]:
        """What paintings sharing one pass must agree on (besides their plan's steps): the
        network, the objective's structure, the optimiser and the precision. Everything else
        (strength, brush, colours, TV, seed, init, size, blend) may differ per painting."""
        return (
            self.network,
            self.content_layer,
            tuple(self.style_weights.items()),
            self.optimizer,
            self.lbfgs_history,
            self.adam_lr,
            self.adam_betas,
            self.precision,
        )

    @property
    def total_steps(self) -> int:
        return sum(self.steps)

    @property
    def preset(self) -> schedule.Preset:
        """The size and steps per scale these settings paint with (the plan's input)."""
        return schedule.Preset(
            long_side=self.long_side, steps=self.steps, optimizer=self.optimizer, init=self.init
        )

    def validate(self) -> None:
        """Raise :class:`protocol.OptionError` for anything the engine will not run."""
        err = protocol.OptionError
        if not 1 <= self.long_side <= MAX_LONG_SIDE:
            raise err(f"size {self.long_side} is out of range: use up to {MAX_LONG_SIDE} px")
        if not self.steps or any(s <= 0 for s in self.steps):
            raise err("steps must be positive")
        if sum(self.steps) > MAX_TOTAL_STEPS:
            raise err(f"at most {MAX_TOTAL_STEPS} steps in all")
        if self.quality not in schedule.QUALITIES:
            raise err(f"quality {self.quality!r} is unknown: use {', '.join(schedule.QUALITIES)}")
        if self.device_kind not in schedule.DEVICE_KINDS:
            raise err(f"device kind must be one of {', '.join(schedule.DEVICE_KINDS)}")
        if self.brush not in BRUSH_SCALES:
            raise err(f"brush {self.brush!r} is unknown: use {', '.join(BRUSH_SCALES)}")
        if self.optimizer not in OPTIMIZERS:
            raise err(f"optimizer {self.optimizer!r} is unknown: use {', '.join(OPTIMIZERS)}")
        if self.init not in INITS:
            raise err(f"init {self.init!r} is unknown: use {', '.join(INITS)}")
        if self.precision not in PRECISIONS:
            raise err(f"precision {self.precision!r} is unknown: use {', '.join(PRECISIONS)}")
        if self.pooling not in ("max", "avg"):
            raise err("pooling must be max or avg")
        if not self.style_layers:
            raise err("at least one style layer is needed")
        if self.layer_weights is not None and len(self.layer_weights) != len(self.style_layers):
            raise err("one weight per style layer is needed")
        for name in (
            "content_weight",
            "style_weight",
            "tv_weight",
            "adam_lr",
            "range_weight",
            "preview_every",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise err(f"{name} must be a finite non-negative number")
        beta1, beta2 = self.adam_betas
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise err("adam_betas must be two numbers in [0, 1)")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise err("seed must be a non-negative whole number")
        if not protocol.BLEND_MIN <= self.blend <= protocol.BLEND_MAX:
            raise err(f"blend must be from {protocol.BLEND_MIN} to {protocol.BLEND_MAX}")
        if self.lbfgs_history < 1 or self.preview_side < 16:
            raise err("lbfgs_history must be >= 1 and preview_side >= 16")
