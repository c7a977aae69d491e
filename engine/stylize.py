"""The optimisation: paint a photo in the style of a painting (Gatys, Ecker and Bethge, 2016).

A canvas is optimised so that its VGG-19 features at the content layer match the photo's and
the Gram matrices of its features at the style layers match the painting's. Where we depart
from the paper, and why:

* Coarse to fine. The plan (``schedule.plan``) runs the optimisation at successively
  doubled sizes; each scale starts from the bicubically upsampled result of the previous one. The
  layout and colours settle cheaply at small sizes, so the expensive full-size scale only adds
  detail and needs few iterations.
* Start from the photo (``init="photo"``) rather than white noise: it converges in far fewer
  iterations; ``init="noise"`` is available and seeded.
* L-BFGS without line search, one objective evaluation per iteration (as in jcjohnson's
  neural-style): a "step" is exactly one forward and backward pass, so progress, ETA and cancel are
  per evaluation. Adam is available for memory-bound devices. Our own :class:`lbfgs.LBFGS` runs
  the same algorithm as torch's without its ~100 host synchronisations a step (see ``lbfgs.py``).
* Nothing in the loop waits for the device except what a decision needs: the loss values shown
  in progress are read at most every ``LOSS_READ_INTERVAL`` seconds (and at the end of each
  scale), not after every evaluation; the stop flag is a host-side check every evaluation.
* Style targets are computed once per painting, size and settings under ``torch.inference_mode``
  and kept in a bounded LRU cache (:class:`StyleCache`), so a challenge's painting is analysed once.
* Colour control (Gatys et al. 2017, "Controlling Perceptual Factors"): with ``keep_colors`` only
  the luminance is stylised. The painting's luminance is matched to the photo's mean and spread,
  the canvas is a single luminance channel fed to VGG as grey RGB, and the photo's chroma (YCbCr)
  is put back at the end.
* Mixed precision on CUDA: VGG runs under autocast (bf16 where supported, else fp16); Gram
  matrices, losses and the canvas stay float32 (see ``losses.py``).

``Stylist`` keeps the network warm and the style cache between paintings; :func:`stylize` is the
one-shot convenience. Neither imports anything from the chat side.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Final

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from engine import images, protocol, schedule
from engine import weights as weights_module
from engine.lbfgs import LBFGS
from engine.losses import Objective, Targets, gram_matrix, range_loss
from engine.paint_settings import PaintSettings
from engine.vgg import VGGFeatures, min_input_side

log = logging.getLogger(__name__)

OOM_RETRY_FACTOR: Final = 0.75  # on CUDA out-of-memory, retry once at this fraction of the size
DEFAULT_CACHE_SIZE: Final = 32  # style-target entries (one per painting, size and settings)
# Reading the loss values waits for the device to finish the step (on CUDA the CPU can otherwise
# queue the next step's kernels meanwhile), so progress carries the values as last read.
LOSS_READ_INTERVAL: Final = 1.0  # seconds
# Backward under fp16 autocast multiplies the objective by this and divides the canvas gradient
# by it again (a power of two: exact). Unscaled, the gradients reaching the fp16 features are
# tiny: the objective is about 1 (normalised per scale) and every term is a mean over up to
# millions of elements. Measured at 512 px: median 6e-8 to 3e-6 per element, all of them below
# fp16's smallest normal number (6e-5) and half of relu5_1's below its smallest subnormal (6e-8,
# flushed to zero); at 1024 px they are four times smaller still. Scaled, the largest is about
# 1.3 at 512 px and 85 at 64 px, far from fp16's 65504. bf16 has float32's range and needs none.
FP16_LOSS_SCALE: Final = 2.0**16

ProgressCallback = Callable[["Progress"], None]
StopCheck = Callable[[], bool]


# ----------------------------------------------------------------------------------------------
# Errors. ``code`` is a protocol error code, ``message`` is for people.


class PaintError(Exception):
    """A painting that could not be made; ``code`` is a ``protocol.ErrorCode``."""

    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Cancelled(PaintError):
    """``should_stop`` returned True; raised within one objective evaluation."""

    code = "cancelled"


class OutOfMemory(PaintError):
    """Even the smaller retry did not fit on the device."""

    code = "out_of_memory"


# ----------------------------------------------------------------------------------------------
# Progress: plain data only, so the worker can forward it across the process boundary.


@dataclass(frozen=True)
class Progress:
    """One step of a painting. ``step``/``total_steps`` are summed over all scales."""

    step: int
    total_steps: int
    scale: int  # 0-based index of the current scale
    scales: int
    width: int  # canvas size at this scale
    height: int
    elapsed: float  # seconds since the painting started
    eta: float | None  # seconds left, None until measurable
    # The weighted objective terms as last read: at the first step, at the end of each scale,
    # with each preview and otherwise at most every LOSS_READ_INTERVAL seconds.
    losses: dict[str, float] = field(default_factory=dict)
    preview_jpeg: bytes | None = None
    note: str | None = None

    @property
    def percent(self) -> float:
        return 100.0 * self.step / self.total_steps if self.total_steps else 0.0


# ----------------------------------------------------------------------------------------------
# Devices.


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """An explicit device wins; otherwise CUDA, then Apple MPS, then CPU."""
    if requested is not None and str(requested) not in ("", "auto"):
        try:
            device = torch.device(requested)
        except (RuntimeError, ValueError):
            raise PaintError(
                f"device {str(requested)!r} is unknown: use cpu, cuda, cuda:N or mps"
            ) from None
        if device.type not in ("cpu", "cuda", "mps"):
            raise PaintError(f"device {device} is not supported: use cpu, cuda, cuda:N or mps")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise PaintError(f"device {device} was asked for but CUDA is not available")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise PaintError(
                f"device {device} was asked for but there are only "
                f"{torch.cuda.device_count()} CUDA devices"
            )
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise PaintError("device mps was asked for but Apple MPS is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_kind(device: torch.device) -> str:
    """``gpu`` for CUDA and MPS, ``cpu`` otherwise (the key into ``schedule.PRESETS``)."""
    return "cpu" if device.type == "cpu" else "gpu"


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The dtype VGG runs in under autocast, or None for float32."""
    if device.type != "cuda" or precision in ("fp32", "tf32"):
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16 if precision == "auto" else None


# ----------------------------------------------------------------------------------------------
# Images <-> tensors, and colour.


def to_tensor(img: Image.Image, device: torch.device) -> Tensor:
    """PIL RGB -> (1, 3, H, W) float32 in [0, 1]."""
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    x = data.view(rgb.height, rgb.width, 3).permute(2, 0, 1).unsqueeze(0)
    return x.to(device=device, dtype=torch.float32).div_(255.0)


def to_image(x: Tensor) -> Image.Image:
    """(1, 3, H, W) in [0, 1] -> PIL RGB (clamped and rounded; a fresh image with no metadata)."""
    u8 = x.detach()[0].float().clamp(0, 1).mul(255).round().to(torch.uint8)
    hwc = u8.permute(1, 2, 0).contiguous().cpu()  # (H, W, 3) uint8
    # Copy the raw bytes out without going through numpy (not a dependency of ours).
    raw = ctypes.string_at(hwc.data_ptr(), hwc.numel())
    return Image.frombytes("RGB", (hwc.shape[1], hwc.shape[0]), raw)


def rgb_to_ycbcr(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> YCbCr (BT.601 full range, as JPEG); chroma centred on 0.5."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 0.5 + (-0.168736 * r - 0.331264 * g + 0.5 * b)
    cr = 0.5 + (0.5 * r - 0.418688 * g - 0.081312 * b)
    return torch.cat([y, cb, cr], dim=1)


def ycbcr_to_rgb(x: Tensor) -> Tensor:
    y, cb, cr = x[:, 0:1], x[:, 1:2] - 0.5, x[:, 2:3] - 0.5
    r = y + 1.402 * cr
    g = y - 0.344136 * cb - 0.714136 * cr
    b = y + 1.772 * cb
    return torch.cat([r, g, b], dim=1)


def match_luminance(y: Tensor, mean: float, std: float) -> Tensor:
    """Shift and scale a luminance channel to the given mean and spread (Gatys et al. 2017, §5)."""
    return (y - y.mean()) / (y.std() + 1e-6) * std + mean


# ----------------------------------------------------------------------------------------------
# The style-target cache.

StyleKey = tuple[object, ...]


class StyleCache:
    """A bounded LRU of painting Gram matrices, keyed by painting hash, size and settings."""

    def __init__(self, max_entries: int = DEFAULT_CACHE_SIZE) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[StyleKey, dict[str, Tensor]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: StyleKey) -> dict[str, Tensor] | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return found

    def put(self, key: StyleKey, grams: dict[str, Tensor]) -> None:
        self._entries[key] = grams
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


def painting_digest(img: Image.Image) -> str:
    """A hash of the painting's pixels (not its file bytes: re-encodings of one image agree)."""
    h = hashlib.sha256()
    h.update(f"{img.mode}:{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Progress bookkeeping for one painting.


class _Tracker:
    """Turns evaluations into :class:`Progress`; totals summed over scales, never going back."""

    def __init__(
        self,
        plan: tuple[schedule.Scale, ...],
        *,
        clock: Callable[[], float],
        on_progress: ProgressCallback | None,
        preview_every: float,
        preview_side: int = images.PREVIEW_SIDE_MAX,
    ) -> None:
        self.clock = clock
        self.started = clock()
        self.on_progress = on_progress
        self.preview_every = preview_every
        self.preview_side = min(preview_side, images.PREVIEW_SIDE_MAX)
        self.last_preview = self.started
        self.losses: dict[str, float] = {}
        self.losses_read: float | None = None  # when the losses were last read
        self.base_steps = 0  # steps done before an out-of-memory restart
        self.base_work = 0
        self.done_steps = 0
        self.done_work = 0
        self.note: str | None = None
        self.plan = plan

    @property
    def total_steps(self) -> int:
        return self.base_steps + sum(s.steps for s in self.plan)

    @property
    def total_work(self) -> int:
        return self.base_work + schedule.total_work(self.plan)

    def restart(self, plan: tuple[schedule.Scale, ...], note: str) -> None:
        """A new plan after an out-of-memory error: keep counting from where we were."""
        self.base_steps, self.base_work = self.done_steps, self.done_work
        self.plan = plan
        self.note = note

    def scale_end(self, index: int) -> int:
        return self.base_steps + sum(s.steps for s in self.plan[: index + 1])

    def step(
        self,
        index: int,
        losses: Mapping[str, Tensor],
        preview: Callable[[], Image.Image],
        *,
        jump_to: int | None = None,
    ) -> None:
        scale = self.plan[index]
        before = self.done_steps
        self.done_steps = jump_to if jump_to is not None else self.done_steps + 1
        self.done_work += (self.done_steps - before) * scale.width * scale.height
        if self.on_progress is None:
            return
        now = self.clock()
        elapsed = now - self.started
        eta = None
        if self.done_steps >= 2 and self.done_work > 0:
            eta = max(0.0, elapsed / self.done_work * (self.total_work - self.done_work))
        jpeg = None
        if self.preview_every > 0 and now - self.last_preview >= self.preview_every:
            self.last_preview = now
            jpeg = images.preview_jpeg(preview(), max_side=self.preview_side)
        if (
            jpeg is not None
            or self.losses_read is None
            or now - self.losses_read >= LOSS_READ_INTERVAL
            or self.done_steps >= self.scale_end(index)
        ):
            self.losses_read = now
            keys = list(losses)
            values = (
                torch.stack([losses[k].detach().float() for k in keys]).tolist() if keys else []
            )
            self.losses = dict(zip(keys, values, strict=True))
        self.on_progress(
            Progress(
                step=self.done_steps,
                total_steps=self.total_steps,
                scale=index,
                scales=len(self.plan),
                width=scale.width,
                height=scale.height,
                elapsed=elapsed,
                eta=eta,
                losses=dict(self.losses),
                preview_jpeg=jpeg,
                note=self.note,
            )
        )


# ----------------------------------------------------------------------------------------------
# The painter.


@dataclass
class _Scene:
    """Everything one painting needs that does not change between scales."""

    settings: PaintSettings
    net: VGGFeatures
    objective: Objective
    painting: Image.Image
    digest: str
    autocast: torch.dtype | None
    luminance: tuple[float, float] | None  # photo's (mean, std) of Y when keeping colours
    generator: torch.Generator


class Stylist:
    """Keeps VGG-19 warm on one device and paints with it; caches painting style targets.

    ``weights`` is a path to a torchvision-format state dict, an already loaded state dict, or
    None for ``$ATELIER_VGG_WEIGHTS`` then torchvision's ImageNet weights (downloaded once into
    the torch cache unless ``allow_download`` is False). Raises :class:`weights.WeightsError`
    when none can be had; never falls back to random weights.
    """

    def __init__(
        self,
        *,
        weights: str | PathLike[str] | Mapping[str, Tensor] | None = None,
        device: str | torch.device | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        channels_last: bool | None = None,
        allow_download: bool = True,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.device = pick_device(device)
        self.kind = device_kind(self.device)
        if isinstance(weights, Mapping):
            state = weights_module.features_only(weights)
        else:
            state = weights_module.load(weights, allow_download=allow_download)
        # channels_last lets cuDNN use its NHWC tensor-core kernels; on CPU oneDNN is about as
        # fast either way (see bench/), so we keep the plain layout there.
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self._state = {
            k: (
                v.to(self.device, torch.float32).contiguous(memory_format=fmt)
                if v.dim() == 4
                else v.to(self.device, torch.float32)
            )
            for k, v in state.items()
        }
        self._nets: dict[tuple[object, ...], VGGFeatures] = {}
        self.cache = StyleCache(cache_size)
        self.clock = clock
        self.last_seed: int | None = None

    # -- planning ---------------------------------------------------------------------------

    def settings_for(self, options: protocol.PaintOptions, **overrides: object) -> PaintSettings:
        """Settings for a member's options on this Stylist's kind of device."""
        return PaintSettings.from_options(options, self.kind, **overrides)

    def plan(self, size: tuple[int, int], settings: PaintSettings) -> tuple[schedule.Scale, ...]:
        """The scales this Stylist will paint a photo of ``size`` at: ``schedule.plan`` with the
        smallest input the layers in use accept (VGG halves the size at every pooling)."""
        smallest = min_input_side((settings.content_layer, *settings.style_layers))
        return schedule.plan(*size, settings.preset, min_side=smallest)

    # -- painting ---------------------------------------------------------------------------

    def paint(
        self,
        photo: Image.Image,
        painting: Image.Image,
        settings: PaintSettings,
        *,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> Image.Image:
        """Paint ``photo`` in the style of ``painting``; return a new RGB image without metadata.

        ``on_progress`` is called after every objective evaluation; ``should_stop`` is checked
        before every evaluation and raises :class:`Cancelled` when it returns True. On CUDA
        out-of-memory the painting is retried once at 3/4 of the size (progress ``note`` says
        so); a second failure raises :class:`OutOfMemory`.
        """
        settings.validate()
        photo = photo if photo.mode == "RGB" else photo.convert("RGB")
        painting = painting if painting.mode == "RGB" else painting.convert("RGB")
        plan = self.plan(photo.size, settings)
        tracker = _Tracker(
            plan,
            clock=self.clock,
            on_progress=on_progress,
            preview_every=settings.preview_every,
            preview_side=settings.preview_side,
        )
        try:
            return self._paint_plan(photo, painting, settings, plan, tracker, should_stop)
        except torch.cuda.OutOfMemoryError:
            if self.device.type != "cuda":
                raise
        # Retry outside the except block, so the failed attempt's tensors are already freed.
        torch.cuda.empty_cache()
        side = max(
            schedule.MIN_SCALE_SIDE, int(max(plan[-1].width, plan[-1].height) * OOM_RETRY_FACTOR)
        )
        smaller = settings.replace(long_side=side)
        plan = self.plan(photo.size, smaller)
        note = f"out of GPU memory, retrying at {side} px"
        log.warning("%s", note)
        tracker.restart(plan, note)
        try:
            return self._paint_plan(photo, painting, smaller, plan, tracker, should_stop)
        except torch.cuda.OutOfMemoryError:
            pass
        torch.cuda.empty_cache()
        raise OutOfMemory(
            f"the painting does not fit in GPU memory even at {side} px; try a lower quality"
        )

    def _network(self, settings: PaintSettings) -> VGGFeatures:
        layers = (settings.content_layer, *settings.style_layers)
        key = (tuple(sorted(set(layers))), settings.pooling)
        net = self._nets.get(key)
        if net is None:
            net = VGGFeatures(self._state, layers=layers, pooling=settings.pooling)
            self._nets[key] = net
        return net

    def _paint_plan(
        self,
        photo: Image.Image,
        painting: Image.Image,
        settings: PaintSettings,
        plan: tuple[schedule.Scale, ...],
        tracker: _Tracker,
        should_stop: StopCheck | None,
    ) -> Image.Image:
        seed = settings.seed if settings.seed is not None else secrets.randbits(63)
        self.last_seed = seed
        if settings.precision == "tf32" or (
            settings.precision == "auto" and self.device.type == "cuda"
        ):
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        elif settings.precision == "fp32" and self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        scene = _Scene(
            settings=settings,
            net=self._network(settings),
            objective=Objective.create(
                content_layer=settings.content_layer,
                style_layers=settings.style_layers,
                layer_weights=settings.layer_weights,
                content_weight=settings.content_weight,
                style_weight=settings.style_weight,
                tv_weight=settings.tv_weight,
            ),
            painting=painting,
            digest=painting_digest(painting),
            autocast=autocast_dtype(self.device, settings.precision),
            luminance=self._photo_luminance(photo, plan[-1]) if settings.keep_colors else None,
            generator=torch.Generator().manual_seed(seed),
        )
        canvas: Tensor | None = None
        photo_t = torch.empty(0)
        for index, scale in enumerate(plan):
            photo_t = self._photo_tensor(photo, scale)
            targets = self._targets(scene, photo_t, scale)
            canvas = self._initial_canvas(scene, canvas, photo_t)
            canvas = self._optimise(scene, targets, canvas, photo_t, index, tracker, should_stop)
        assert canvas is not None
        result = to_image(self._as_rgb(scene, canvas, photo_t))
        log.info(
            "painted %dx%d in %.1fs (%d steps, %s)",
            result.width,
            result.height,
            tracker.clock() - tracker.started,
            tracker.done_steps,
            self.device,
        )
        return result

    # -- per-scale helpers --------------------------------------------------------------------

    def _photo_tensor(self, photo: Image.Image, scale: schedule.Scale) -> Tensor:
        size = (scale.width, scale.height)
        resized = (
            photo
            if photo.size == size
            else photo.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        )
        return to_tensor(resized, self.device)

    def _photo_luminance(self, photo: Image.Image, final: schedule.Scale) -> tuple[float, float]:
        y = rgb_to_ycbcr(self._photo_tensor(photo, final))[:, :1]
        return round(float(y.mean()), 3), round(float(y.std()), 3)

    def _features(self, scene: _Scene, x: Tensor) -> dict[str, Tensor]:
        """VGG features of an RGB or single-channel (luminance) image, (1, 3|1, H, W)."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(self.device, scene.autocast):
            return scene.net(x)

    def _targets(self, scene: _Scene, photo_t: Tensor, scale: schedule.Scale) -> Targets:
        s = scene.settings
        with torch.inference_mode():
            content_in = rgb_to_ycbcr(photo_t)[:, :1] if s.keep_colors else photo_t
            content = self._features(scene, content_in)[s.content_layer].float()
        grams = self._style_grams(scene, scale)
        # Clone outside inference mode: inference tensors may not take part in autograd.
        return Targets(content=content.clone(), grams=grams)

    def _style_grams(self, scene: _Scene, scale: schedule.Scale) -> dict[str, Tensor]:
        s = scene.settings
        pw, ph = self._painting_size(scene, scale)
        key: StyleKey = (
            scene.digest,
            pw,
            ph,
            tuple(s.style_layers),
            s.pooling,
            scene.luminance,
            str(scene.autocast),
            str(self.device),
        )
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        resized = scene.painting.resize((pw, ph), Image.Resampling.LANCZOS, reducing_gap=3.0)
        with torch.inference_mode():
            x = to_tensor(resized, self.device)
            if scene.luminance is not None:
                x = match_luminance(rgb_to_ycbcr(x)[:, :1], *scene.luminance)
            feats = self._features(scene, x)
            grams = {layer: gram_matrix(feats[layer]) for layer in s.style_layers}
        grams = {k: v.clone() for k, v in grams.items()}
        self.cache.put(key, grams)
        return grams

    def _painting_size(self, scene: _Scene, scale: schedule.Scale) -> tuple[int, int]:
        """The painting's size for this canvas: its long side is the canvas's times the brush scale.

        Only the canvas's long side counts (not its area or aspect ratio), so photos of any
        shape painted at one size share the painting's cached style targets.
        """
        pw, ph = scene.painting.size
        factor = scene.settings.brush_scale * max(scale.width, scale.height) / max(pw, ph)
        smallest = min_input_side(scene.settings.style_layers)
        factor = max(factor, smallest / min(pw, ph))
        return max(smallest, round(pw * factor)), max(smallest, round(ph * factor))

    def _initial_canvas(self, scene: _Scene, previous: Tensor | None, photo_t: Tensor) -> Tensor:
        """Upsample the previous scale's canvas, or start from the photo or seeded noise."""
        _, _, h, w = photo_t.shape
        channels = 1 if scene.settings.keep_colors else 3
        if previous is not None:
            canvas = F.interpolate(
                previous.detach(), size=(h, w), mode="bicubic", align_corners=False
            )
            canvas = canvas.clamp_(0, 1)
        elif scene.settings.init == "noise":
            canvas = torch.rand((1, channels, h, w), generator=scene.generator).to(self.device)
        else:
            canvas = rgb_to_ycbcr(photo_t)[:, :1] if channels == 1 else photo_t
        return canvas.detach().clone().contiguous().requires_grad_(True)

    def _as_rgb(self, scene: _Scene, canvas: Tensor, photo_t: Tensor) -> Tensor:
        """The canvas as RGB: with ``keep_colors`` the luminance plus the photo's chroma."""
        x = canvas.detach()
        if not scene.settings.keep_colors:
            return x
        chroma = rgb_to_ycbcr(photo_t)[:, 1:]
        return ycbcr_to_rgb(torch.cat([x.clamp(0, 1), chroma], dim=1))

    def _optimise(
        self,
        scene: _Scene,
        targets: Targets,
        canvas: Tensor,
        photo_t: Tensor,
        index: int,
        tracker: _Tracker,
        should_stop: StopCheck | None,
    ) -> Tensor:
        """Run one scale's iterations on ``canvas`` (a leaf tensor) and return it."""
        s = scene.settings
        steps = tracker.plan[index].steps

        def evaluate() -> dict[str, Tensor]:
            if should_stop is not None and should_stop():
                raise Cancelled("the painting was cancelled")
            return scene.objective.terms(self._features(scene, canvas), canvas, targets)

        def report(parts: Mapping[str, Tensor]) -> None:
            tracker.step(index, parts, lambda: to_image(self._as_rgb(scene, canvas, photo_t)))

        last: dict[str, Tensor] = {}
        if s.optimizer == "adam":
            adam = torch.optim.Adam([canvas], lr=s.adam_lr)
            for _ in range(steps):
                adam.zero_grad(set_to_none=True)
                last = evaluate()
                _backward(last["total"], canvas, scene.autocast)
                adam.step()
                with torch.no_grad():
                    canvas.clamp_(0, 1)  # Adam's box constraint; L-BFGS is left unconstrained
                report(last)
        else:
            lbfgs = LBFGS(
                canvas,
                history_size=s.lbfgs_history,
                lr=1.0,
                tolerance_grad=0.0,
                tolerance_change=1e-12,
            )
            # L-BFGS minimises the objective divided by its value at the start of the scale.
            # The minimiser is the same, but L-BFGS has absolute thresholds (curvature pairs
            # with yᵀs <= 1e-10 are dropped, the first step is 1/|g|₁): without this, small
            # objectives (weak strength, flat paintings) stall it in gradient descent.
            # L-BFGS is unconstrained, so a penalty (in those normalised units) keeps pixels
            # inside [0, 1]: clipping them only at the end would undo part of the optimisation.
            normaliser: float | None = None

            def closure() -> Tensor:
                nonlocal last, normaliser
                last = evaluate()
                if normaliser is None:  # one read per scale
                    normaliser = 1.0 / max(float(last["total"].detach()), 1e-30)
                scaled = last["total"] * normaliser
                if s.range_weight:
                    scaled = scaled + s.range_weight * range_loss(canvas)
                _backward(scaled, canvas, scene.autocast)
                report(last)
                return scaled

            evaluations = lbfgs.run(closure, steps)
            if evaluations < steps:
                # Converged early: the remaining steps of this scale are done, by definition.
                log.debug("L-BFGS stopped after %d of %d evaluations", evaluations, steps)
                tracker.step(
                    index,
                    last,
                    lambda: to_image(self._as_rgb(scene, canvas, photo_t)),
                    jump_to=tracker.scale_end(index),
                )
        return canvas


def _backward(loss: Tensor, canvas: Tensor, autocast: torch.dtype | None) -> None:
    """``loss.backward()``, with a loss scale under fp16 autocast (see ``FP16_LOSS_SCALE``)."""
    if autocast is not torch.float16:
        loss.backward()
        return
    (loss * FP16_LOSS_SCALE).backward()
    if canvas.grad is not None:
        canvas.grad.div_(FP16_LOSS_SCALE)


@contextlib.contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def stylize(
    photo: Image.Image,
    painting: Image.Image,
    settings: PaintSettings | None = None,
    *,
    weights: str | PathLike[str] | Mapping[str, Tensor] | None = None,
    device: str | torch.device | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> Image.Image:
    """Paint once: load the network, paint, return the image. Use :class:`Stylist` to repeat."""
    stylist = Stylist(weights=weights, device=device)
    if settings is None:
        settings = stylist.settings_for(protocol.PaintOptions())
    return stylist.paint(
        photo, painting, settings, on_progress=on_progress, should_stop=should_stop
    )
