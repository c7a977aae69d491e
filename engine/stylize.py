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
  per evaluation. Our own :class:`lbfgs.LBFGS` runs torch's algorithm with its state on the
  device, for a batch of canvases at once (``lbfgs.py``). Adam (``adam.py``) is the CPU draft
  preset's optimiser: in one scale from the photo recoloured to the painting's colours
  (``init="colour"``) it reaches in 26 iterations what L-BFGS needs about 60 for there.
* Nothing in the loop waits for the device except what a decision needs: the loss values shown
  in progress are read at most every ``progress.LOSS_READ_INTERVAL`` seconds (and at the end of
  each scale), whether the optimiser has stopped is read every :data:`POLL_STEPS` iterations on a
  GPU; the stop flags are host-side checks every iteration.
* Several paintings in one pass (:meth:`Stylist.paint_batch`): jobs of one quality are stacked
  into one batch tensor padded to a size bucket, with masks that keep the padding out of every
  term (``batch.py``); each job keeps its own photo, painting, weights, optimiser state,
  progress, cancel and result. One painting alone is a batch of one.
* On CUDA each scale's iteration runs at one fixed shape in a :class:`workspace.Workspace` and is
  replayed as a CUDA graph after two warm-up iterations (``step_graph.py``); cuDNN autotunes
  per shape; VGG runs in channels-last layout.
* Style targets are computed once per painting, size and settings under ``torch.inference_mode``
  and kept in a bounded LRU (``style_cache.py``), so a challenge's painting is analysed once; a
  style library's paintings are pinned there and warmed ahead (:meth:`Stylist.warm`). A blend of
  two paintings pulls towards the weighted mix of their Gram matrices (``targets.py``).
* A per-step hook (``Commission.on_step``) sees the canvas after every iteration, outside the
  loop's maths; a timelapse keeps frames through it with device-side copies (``timelapse.py``).
* Colour control (Gatys et al. 2017): with ``keep_colors`` only the luminance is stylised and
  the photo's chroma is put back at the end (``colour.py``).
* Mixed precision on CUDA: VGG runs under autocast (bf16 where supported, else fp16); Gram
  matrices, losses and the canvas stay float32 (``device.py``, ``losses.py``).

``Stylist`` keeps the network warm and the style cache between paintings; :func:`stylize` is the
one-shot convenience. Neither imports anything from the chat side. What one job keeps while it
is painted is in ``easel.py``, progress bookkeeping in ``progress.py``, the errors in
``errors.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from os import PathLike
from typing import Final

import torch
from PIL import Image
from torch import Tensor

from engine import protocol, schedule
from engine import weights as weights_module
from engine.batch import Layout
from engine.device import autocast_dtype, device_kind, pick_device, set_matmul_precision, tune
from engine.easel import Commission, Easel, Outcome, StopCheck
from engine.errors import OutOfMemory
from engine.losses import Targets
from engine.paint_settings import PaintSettings
from engine.progress import ProgressCallback, StepView
from engine.step_graph import CudaGraphs, Recorder
from engine.style_cache import DEFAULT_CACHE_SIZE, StyleCache, painting_digest
from engine.targets import Look, content_features, painting_grams, style_grams
from engine.vgg import VGGFeatures, min_input_side
from engine.workspace import Shape, Workspace, Workspaces

log = logging.getLogger(__name__)

OOM_RETRY_FACTOR: Final = 0.75  # on CUDA out-of-memory, retry once at this fraction of the size
POLL_STEPS: Final = 16  # on a GPU, read whether the optimiser has stopped every this many steps
GPU_MAX_BATCH: Final = 4  # paintings per pass the engine advertises on a GPU (EngineReady)
GPU_WORKSPACES: Final = 8  # shapes whose workspaces (and graphs) are kept on a GPU

__all__ = ["Commission", "Outcome", "StopCheck", "Stylist", "stylize"]


class Stylist:
    """Keeps VGG-19 warm on one device and paints with it; caches painting style targets.

    ``weights`` is a path to a torchvision-format state dict, an already loaded state dict, or
    None for ``$ATELIER_VGG_WEIGHTS`` then torchvision's ImageNet weights (downloaded once into
    the torch cache unless ``allow_download`` is False). Raises :class:`weights.WeightsError`
    when none can be had; never falls back to random weights.

    ``graphs`` replays each scale's iteration as a CUDA graph (default: on CUDA);
    ``make_recorder`` replaces the CUDA recorder (tests drive the graph logic on CPU with it).
    ``bucket_quantum`` pads canvases to a multiple of it at the finest scale (default: 64 px on
    CUDA, where shapes should repeat; 1, no padding alone, on CPU).
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
        graphs: bool | None = None,
        make_recorder: Callable[[], Recorder | None] | None = None,
        bucket_quantum: int | None = None,
    ) -> None:
        self.device = pick_device(device)
        self.kind = device_kind(self.device)
        cuda = self.device.type == "cuda"
        if isinstance(weights, Mapping):
            state = weights_module.features_only(weights)
        else:
            state = weights_module.load(weights, allow_download=allow_download)
        # channels_last lets cuDNN use its NHWC tensor-core kernels; on CPU oneDNN is about as
        # fast either way (see bench/), so we keep the plain layout there.
        self.channels_last = cuda if channels_last is None else channels_last
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self._state = {
            k: (
                v.to(self.device, torch.float32).contiguous(memory_format=fmt)
                if v.dim() == 4
                else v.to(self.device, torch.float32)
            )
            for k, v in state.items()
        }
        tune(self.device)
        self._nets: dict[tuple[object, ...], VGGFeatures] = {}
        self._network(PaintSettings())  # the default network, built now: ready for a first job
        self.cache = StyleCache(cache_size)
        self.clock = clock
        self.last_seed: int | None = None
        use_graphs = cuda if graphs is None else graphs
        if make_recorder is None:
            make_recorder = self._cuda_recorder if use_graphs and cuda else _no_recorder
        elif not use_graphs:
            make_recorder = _no_recorder
        self.workspaces = Workspaces(GPU_WORKSPACES if cuda else 2, make_recorder)
        self.bucket_quantum = bucket_quantum or (schedule.BUCKET_QUANTUM if cuda else 1)
        self.poll_steps = 1 if self.device.type == "cpu" else POLL_STEPS
        self.max_batch = GPU_MAX_BATCH if self.kind == "gpu" else 1

    def _cuda_recorder(self) -> Recorder:
        return CudaGraphs(self.device)

    # -- planning ---------------------------------------------------------------------------

    def settings_for(self, options: protocol.PaintOptions, **overrides: object) -> PaintSettings:
        """Settings for a member's options on this Stylist's kind of device."""
        return PaintSettings.from_options(options, self.kind, **overrides)

    def plan(self, size: tuple[int, int], settings: PaintSettings) -> tuple[schedule.Scale, ...]:
        """The scales this Stylist will paint a photo of ``size`` at: ``schedule.plan`` with the
        smallest input the layers in use accept (VGG halves the size at every pooling)."""
        return schedule.plan(*size, settings.preset, min_side=_min_side(settings))

    def batch_key(self, size: tuple[int, int], settings: PaintSettings) -> Hashable:
        """Paintings with equal keys can share one pass: the same steps at every scale and the
        same network, objective structure, optimiser and precision. Everything else (photo,
        painting, size within reason, strength, brush, colours, seed, init) may differ."""
        return _group_key(settings, self.plan(size, settings))

    def warm(self, painting: Image.Image, settings: PaintSettings) -> str:
        """Compute ``painting``'s style targets for the scales ``settings`` paint at, so that a
        painting in its style finds them cached; returns the painting's digest (to pin it).

        The scales are those of a 4:3 photo: photos of any shape share them (targets depend on
        a scale's long side only), unless very narrow. With ``keep_colors`` the targets depend
        on each photo's luminance, so those are not warmed."""
        rgb = painting if painting.mode == "RGB" else painting.convert("RGB")
        digest = painting_digest(rgb)
        side = settings.long_side
        net = self._network(settings)
        set_matmul_precision(self.device, settings.precision)
        for scale in self.plan((side, max(1, side * 3 // 4)), settings):
            look = Look(
                settings, None, max(scale.width, scale.height), self.device, self.channels_last
            )
            painting_grams(net, rgb, digest, look, self.cache)
        return digest

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
        commission = Commission(photo, painting, settings, on_progress, should_stop)
        (outcome,) = self.paint_batch([commission])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def paint_batch(self, commissions: Sequence[Commission]) -> list[Outcome]:
        """Paint several commissions, sharing passes where they can; one outcome each, in order.

        Commissions with equal :meth:`batch_key` are painted together in one pass; the others
        in further passes, in order of first appearance. Each outcome is the picture or the
        exception that ended that job (bad settings, :class:`Cancelled`, :class:`OutOfMemory`,
        ...); it also goes to the commission's ``on_outcome`` as soon as it is known. A cancel
        ends only its own job. On CUDA out-of-memory a batch falls back to painting its jobs one
        at a time (each with the single retry at a smaller size).
        """
        outcomes: list[Outcome | None] = [None] * len(commissions)
        easels: list[tuple[int, Easel]] = []
        groups: dict[Hashable, list[Easel]] = {}
        for i, commission in enumerate(commissions):
            try:
                easel = self._easel(commission)
            except Exception as error:  # this job's own settings or inputs: it alone fails
                outcomes[i] = error
                if commission.on_outcome is not None:
                    commission.on_outcome(error)
                continue
            easels.append((i, easel))
            groups.setdefault(_group_key(easel.settings, easel.plan), []).append(easel)
        for group in groups.values():
            self._paint_group(group)
        for i, easel in easels:
            outcomes[i] = easel.outcome
        return [_known(outcome) for outcome in outcomes]

    def _easel(self, commission: Commission) -> Easel:
        commission.settings.validate()
        easel = Easel(
            commission,
            self.plan(commission.photo.size, commission.settings),
            self.device,
            self.clock,
        )
        self.last_seed = easel.seed
        return easel

    def _paint_group(self, easels: list[Easel]) -> None:
        """One pass for ``easels``; on CUDA out-of-memory, each alone with the smaller retry."""
        try:
            self._paint_pass(easels)
            return
        except torch.cuda.OutOfMemoryError:
            if self.device.type != "cuda":
                raise
        except Exception as error:  # a failure of the shared pass ends every job in it
            for easel in easels:  # (the caller logs it: the worker with each job's id)
                easel.finish(error)
            return
        self._free_memory()  # outside the except block: the failed pass's tensors are freed
        for easel in easels:
            if easel.done:
                continue
            if len(easels) > 1:
                note = "out of GPU memory in a batch, painting this one on its own"
                easel.replan(easel.settings, easel.plan, note)
                if self._paint_alone(easel):
                    continue
            self._retry_smaller(easel)

    def _paint_alone(self, easel: Easel) -> bool:
        """Paint one easel; False when it ran out of GPU memory."""
        try:
            self._paint_pass([easel])
            return True
        except torch.cuda.OutOfMemoryError:
            pass
        self._free_memory()
        return False

    def _retry_smaller(self, easel: Easel) -> None:
        final = easel.plan[-1]
        side = max(schedule.MIN_SCALE_SIDE, int(max(final.width, final.height) * OOM_RETRY_FACTOR))
        smaller = easel.settings.replace(long_side=side)
        note = f"out of GPU memory, retrying at {side} px"
        log.warning("%s", note)
        easel.replan(smaller, self.plan(easel.photo.size, smaller), note)
        if not self._paint_alone(easel):
            easel.finish(
                OutOfMemory(
                    f"the painting does not fit in GPU memory even at {side} px; "
                    "try a lower quality"
                )
            )

    def _free_memory(self) -> None:
        self.workspaces.clear()
        torch.cuda.empty_cache()

    def _paint_pass(self, easels: list[Easel]) -> None:
        """Paint ``easels`` (one group) along their plans, each scale from the previous one."""
        started = self.clock()
        count = len(easels[0].plan)
        for index in range(count):
            live = [easel for easel in easels if not easel.done]
            if not live:
                return
            self._paint_scale(live, index)
        for easel in easels:
            if not easel.done and easel.canvas is not None:
                result = easel.image(easel.canvas)
                log.info(
                    "painted %dx%d in %.1fs (%d steps, %s, batch of %d)",
                    result.width,
                    result.height,
                    self.clock() - started,
                    easel.tracker.done_steps,
                    self.device,
                    len(easels),
                )
                easel.finish(result)

    # -- one scale ----------------------------------------------------------------------------

    def _paint_scale(self, easels: list[Easel], index: int) -> None:
        """Set up one scale's workspace for ``easels`` and run its iterations."""
        settings = easels[0].settings
        scales = [easel.plan[index] for easel in easels]
        for easel, scale in zip(easels, scales, strict=True):
            easel.photo_t = easel.photo_at(scale)
        quantum = self.bucket_quantum
        if quantum > 1:
            quantum = schedule.bucket_quantum(index, len(easels[0].plan), quantum)
        layout = Layout.of(
            [(s.height, s.width) for s in scales], [e.channels for e in easels], quantum
        )
        net = self._network(settings)
        shape = self._shape(easels, layout)
        region = layout.region(self.device, net.depth + 1) if shape.masked else None
        set_matmul_precision(self.device, settings.precision)
        workspace = self.workspaces.get(shape, net, self.device)
        grams = [
            style_grams(net, e, s, self.cache, self.device, self.channels_last)
            for e, s in zip(easels, scales, strict=True)
        ]
        targets = Targets(
            content=content_features(net, easels, layout, shape, region),
            grams={layer: torch.cat([g[layer] for g in grams]) for layer in settings.style_layers},
        )
        canvas = layout.pad([easel.initial_canvas() for easel in easels])
        weights = {
            "content": [e.settings.content_weight for e in easels],
            "style": [e.settings.style_weight for e in easels],
            "tv": [e.settings.tv_weight for e in easels],
            "range": [e.settings.range_weight for e in easels],
        }
        workspace.load(canvas, targets, region, weights)
        self._iterate(workspace, easels, layout, index)
        painted = workspace.canvas.detach()
        for i, easel in enumerate(easels):
            easel.canvas = layout.crop(painted, i).clone()

    def _shape(self, easels: list[Easel], layout: Layout) -> Shape:
        s = easels[0].settings
        return Shape(
            batch=layout.batch,
            depth=layout.depth,
            height=layout.height,
            width=layout.width,
            masked=layout.padded,
            mixed=layout.mixed,
            use_tv=any(e.settings.tv_weight for e in easels),
            optimizer=s.optimizer,
            history=s.lbfgs_history,
            adam_lr=s.adam_lr,
            adam_betas=s.adam_betas,
            network=s.network,
            content_layer=s.content_layer,
            style_weights=tuple(s.style_weights.items()),
            autocast=autocast_dtype(self.device, s.precision),
            channels_last=self.channels_last,
        )

    def _iterate(
        self, workspace: Workspace, easels: list[Easel], layout: Layout, index: int
    ) -> None:
        """The iterations of one scale, with each job's progress, hooks and cancel.

        A cancelled job stops moving at once and gets its outcome; its row of the batch is
        dropped at the next scale. When the optimiser has stopped every row (converged), the
        scale ends early and progress jumps to its end.
        """
        steps = easels[0].plan[index].steps
        for n in range(1, steps + 1):
            for i, easel in enumerate(easels):
                if not easel.done and easel.stop_requested():
                    workspace.stop(i)
                    easel.cancel()
            if all(easel.done for easel in easels):
                return
            if n == 1:
                workspace.begin()
            else:
                workspace.runner(steps - n + 1)
            losses = _LossRows(workspace.terms)
            self._report(workspace, easels, layout, index, losses)
            if n < steps and n % self.poll_steps == 0 and not bool(workspace.active.any()):
                log.debug("the optimiser stopped after %d of %d iterations", n, steps)
                self._report(workspace, easels, layout, index, losses, converged=True)
                return

    def _report(
        self,
        workspace: Workspace,
        easels: list[Easel],
        layout: Layout,
        index: int,
        losses: _LossRows,
        *,
        converged: bool = False,
    ) -> None:
        """After an iteration: each live job's progress, then its per-step hook. ``converged``:
        the scale ends early, so progress jumps to its end."""
        for i, easel in enumerate(easels):
            if easel.done:
                continue
            preview = self._preview(workspace, easel, layout, i)
            tracker = easel.tracker
            jump = tracker.scale_end(index) if converged else None
            tracker.step(index, losses.reader(i), preview, jump_to=jump)
            hook = easel.commission.on_step
            if hook is not None:
                scale = easel.plan[index]
                snapshot = self._snapshot(workspace, easel, layout, i)
                size = (scale.width, scale.height)
                hook(
                    StepView(
                        index, tracker.done_steps, *size, tracker.total_steps, preview, snapshot
                    )
                )

    @staticmethod
    def _preview(
        workspace: Workspace, easel: Easel, layout: Layout, i: int
    ) -> Callable[[], Image.Image]:
        return lambda: easel.image(layout.crop(workspace.canvas.detach(), i))

    @staticmethod
    def _snapshot(
        workspace: Workspace, easel: Easel, layout: Layout, i: int
    ) -> Callable[[], Tensor]:
        return lambda: easel.pixels(layout.crop(workspace.canvas.detach(), i))

    def _network(self, settings: PaintSettings) -> VGGFeatures:
        key = settings.network
        net = self._nets.get(key)
        if net is None:
            layers = (settings.content_layer, *settings.style_layers)
            net = VGGFeatures(self._state, layers=layers, pooling=settings.pooling)
            self._nets[key] = net
        return net


class _LossRows:
    """The loss terms of one iteration for every job, read off the device at most once."""

    def __init__(self, terms: Mapping[str, Tensor]) -> None:
        self.terms = terms
        self.values: list[list[float]] | None = None

    def reader(self, row: int) -> Callable[[], dict[str, float]]:
        def read() -> dict[str, float]:
            if self.values is None:
                self.values = torch.stack(list(self.terms.values())).tolist()
            return {k: v[row] for k, v in zip(self.terms, self.values, strict=True)}

        return read


def _no_recorder() -> Recorder | None:
    return None


def _known(outcome: Outcome | None) -> Outcome:
    if outcome is None:  # every path through paint_batch ends each job
        raise RuntimeError("a painting ended without an outcome")
    return outcome


def _min_side(settings: PaintSettings) -> int:
    return min_input_side((settings.content_layer, *settings.style_layers))


def _group_key(settings: PaintSettings, plan: tuple[schedule.Scale, ...]) -> Hashable:
    return (tuple(s.steps for s in plan), settings.shared)


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
