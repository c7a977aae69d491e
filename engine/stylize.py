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
  in progress are read at most every ``progress.LOSS_READ_INTERVAL`` seconds (and at the end of
  each scale), not after every evaluation; the stop flag is a host-side check every evaluation.
* Style targets are computed once per painting, size and settings under ``torch.inference_mode``
  and kept in a bounded LRU (``style_cache.py``), so a challenge's painting is analysed once.
* Colour control (Gatys et al. 2017): with ``keep_colors`` only the luminance is stylised and
  the photo's chroma is put back at the end (``colour.py``).
* Mixed precision on CUDA: VGG runs under autocast (bf16 where supported, else fp16); Gram
  matrices, losses and the canvas stay float32 (``device.py``, ``losses.py``).

``Stylist`` keeps the network warm and the style cache between paintings; :func:`stylize` is the
one-shot convenience. Neither imports anything from the chat side. Progress bookkeeping is in
``progress.py``, the errors in ``errors.py``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from os import PathLike
from typing import Final

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from engine import protocol, schedule
from engine import weights as weights_module
from engine.colour import match_luminance, rgb_to_ycbcr, to_image, to_tensor, ycbcr_to_rgb
from engine.device import (
    autocast,
    autocast_dtype,
    backward,
    device_kind,
    pick_device,
    set_matmul_precision,
)
from engine.errors import Cancelled, OutOfMemory
from engine.lbfgs import LBFGS
from engine.losses import Objective, Targets, gram_matrix, range_loss
from engine.paint_settings import PaintSettings
from engine.progress import ProgressCallback, Tracker
from engine.style_cache import DEFAULT_CACHE_SIZE, StyleCache, StyleKey, painting_digest
from engine.vgg import VGGFeatures, min_input_side

log = logging.getLogger(__name__)

OOM_RETRY_FACTOR: Final = 0.75  # on CUDA out-of-memory, retry once at this fraction of the size
StopCheck = Callable[[], bool]


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
        tracker = Tracker(
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

    def _paint_plan(
        self,
        photo: Image.Image,
        painting: Image.Image,
        settings: PaintSettings,
        plan: tuple[schedule.Scale, ...],
        tracker: Tracker,
        should_stop: StopCheck | None,
    ) -> Image.Image:
        """Paint along ``plan``, each scale starting from the previous one's canvas."""
        scene = self._scene(photo, painting, settings, plan[-1])
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

    # -- setup helpers ------------------------------------------------------------------------

    def _scene(
        self,
        photo: Image.Image,
        painting: Image.Image,
        settings: PaintSettings,
        final: schedule.Scale,
    ) -> _Scene:
        """Set up one painting: its seed, precision, network, objective and colour statistics."""
        seed = settings.seed if settings.seed is not None else secrets.randbits(63)
        self.last_seed = seed
        set_matmul_precision(self.device, settings.precision)
        return _Scene(
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
            luminance=self._photo_luminance(photo, final) if settings.keep_colors else None,
            generator=torch.Generator().manual_seed(seed),
        )

    def _network(self, settings: PaintSettings) -> VGGFeatures:
        layers = (settings.content_layer, *settings.style_layers)
        key = (tuple(sorted(set(layers))), settings.pooling)
        net = self._nets.get(key)
        if net is None:
            net = VGGFeatures(self._state, layers=layers, pooling=settings.pooling)
            self._nets[key] = net
        return net

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
        with autocast(self.device, scene.autocast):
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
        tracker: Tracker,
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
                backward(last["total"], canvas, scene.autocast)
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
                backward(scaled, canvas, scene.autocast)
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
