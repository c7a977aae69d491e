"""The tensors one scale of a batch is painted in, and one iteration on them.

A :class:`Workspace` serves one :class:`Shape` (batch size, padded canvas size, network and the
options that change what an iteration computes) and owns every tensor an iteration touches: the
canvases, the targets, each job's weights and masks, the optimiser's state. An iteration
(:meth:`Workspace.step`: the objective and its gradient, the optimiser's update, the move) writes
only into those tensors, in place, and reads nothing back to the host, so on CUDA it is captured
once as a graph and replayed (``step_graph.py``). A later batch of the same shape loads its own
values into the same tensors (:meth:`Workspace.load`) and replays the same graph.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import torch
from torch import Tensor

from engine.adam import Adam
from engine.batch import Region
from engine.device import autocast, gradient
from engine.lbfgs import LBFGS
from engine.losses import Objective, Targets, range_loss
from engine.step_graph import Recorder, Runner
from engine.vgg import VGGFeatures

WEIGHT_NAMES: Final = ("content", "style", "tv", "range")
NORMALISER_FLOOR: Final = 1e-30


@dataclass(frozen=True)
class Shape:
    """What fixes an iteration's computation; one workspace (and one graph) per shape."""

    batch: int
    depth: int  # canvas channels: 1 when every job keeps its colours, else 3
    height: int
    width: int
    masked: bool  # padded: the network and the losses use the region's masks
    mixed: bool  # luminance-only and RGB canvases together
    use_tv: bool
    optimizer: str  # "lbfgs" or "adam"
    history: int  # L-BFGS pairs
    adam_lr: float
    adam_betas: tuple[float, float]
    network: tuple[object, ...]  # the Stylist's key of the VGGFeatures in use
    content_layer: str
    style_weights: tuple[tuple[str, float], ...]
    autocast: torch.dtype | None
    channels_last: bool


def network_features(
    net: VGGFeatures,
    x: Tensor,
    *,
    autocast_to: torch.dtype | None,
    channels_last: bool,
    region: Region | None = None,
    mixed: bool = False,
) -> dict[str, Tensor]:
    """VGG features of a batch of canvases or photos, (B, 1 or 3, H, W).

    Luminance-only images are fed to the network as grey RGB (in a ``mixed`` batch, the rows
    ``region.luminance`` marks). With a ``region`` (a padded batch) the network zeroes
    everything outside each image's region (``batch.py``).
    """
    if mixed:
        if region is None:
            raise ValueError("a mixed batch needs its region")
        x = torch.where(region.luminance, x[:, :1].expand(-1, 3, -1, -1), x)
    elif x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    masks = region.spatial if region is not None else None
    with autocast(x.device, autocast_to):
        return net(x, masks)


class Workspace:
    """Every tensor of one scale's iterations for a batch of ``shape``, at fixed addresses."""

    def __init__(
        self,
        shape: Shape,
        net: VGGFeatures,
        device: torch.device,
        recorder: Recorder | None = None,
    ) -> None:
        self.shape = shape
        self.net = net
        b = shape.batch
        self.canvas = torch.zeros(
            b, shape.depth, shape.height, shape.width, device=device, requires_grad=True
        )
        self.weights = {name: torch.zeros(b, device=device) for name in WEIGHT_NAMES}
        self.normaliser = torch.ones(b, device=device)
        self.objective = Objective(
            content_layer=shape.content_layer,
            style_weights=dict(shape.style_weights),
            content_weight=self.weights["content"],
            style_weight=self.weights["style"],
            tv_weight=self.weights["tv"],
            use_tv=shape.use_tv,
        )
        self.optimiser: LBFGS | Adam
        if shape.optimizer == "adam":
            self.optimiser = Adam(self.canvas, lr=shape.adam_lr, betas=shape.adam_betas)
        else:
            # Tolerances as before: never stop on a small gradient (the objective is
            # normalised per scale), stop only when nothing changes any more.
            self.optimiser = LBFGS(
                self.canvas,
                history_size=shape.history,
                lr=1.0,
                tolerance_grad=0.0,
                tolerance_change=1e-12,
            )
        names = ("content", "style", *(("tv",) if shape.use_tv else ()), "total")
        self.terms = {name: torch.zeros(b, device=device) for name in names}
        self.targets: Targets | None = None
        self.region: Region | None = None
        self.runner = Runner(self.step, recorder)

    @property
    def active(self) -> Tensor:
        """(B,) which canvases still move (a converged or cancelled one does not)."""
        return self.optimiser.active

    def features(self, x: Tensor) -> dict[str, Tensor]:
        return network_features(
            self.net,
            x,
            autocast_to=self.shape.autocast,
            channels_last=self.shape.channels_last,
            region=self.region,
            mixed=self.shape.mixed,
        )

    # -- loading a batch -----------------------------------------------------------------------

    def load(
        self,
        canvas: Tensor,
        targets: Targets,
        region: Region | None,
        weights: Mapping[str, Sequence[float]],
    ) -> None:
        """Take a batch's starting canvases, targets, masks and weights (values are copied)."""
        with torch.no_grad():
            self.canvas.copy_(canvas)
        if self.targets is None:
            self.targets = Targets(
                content=targets.content.clone(),
                grams={k: v.clone() for k, v in targets.grams.items()},
            )
        else:
            self.targets.content.copy_(targets.content)
            for layer, gram in targets.grams.items():
                self.targets.grams[layer].copy_(gram)
        if region is not None:
            if self.region is None:
                self.region = region.clone()
            else:
                self.region.copy_(region)
        for name in WEIGHT_NAMES:
            values = torch.tensor(weights[name], dtype=torch.float32)
            self.weights[name].copy_(values)

    def stop(self, index: int) -> None:
        """Canvas ``index`` moves no more (its job was cancelled); the others go on."""
        self.optimiser.active[index] = False

    # -- iterations ------------------------------------------------------------------------------

    def begin(self) -> None:
        """The first iteration of a scale: it also fixes the normaliser and resets the
        optimiser. Always eager."""
        loss, grad = self._evaluate(first=True)
        self.optimiser.begin(loss, grad)
        self.optimiser.move()

    def step(self) -> None:
        """A further iteration: evaluate, update the optimiser, move. Graph-safe: in place, no
        host reads (a test holds it to that)."""
        loss, grad = self._evaluate(first=False)
        self.optimiser.observe(loss, grad)
        self.optimiser.move()

    def _evaluate(self, *, first: bool) -> tuple[Tensor, Tensor]:
        """The objective per canvas as the optimiser sees it, (B,), and its gradient."""
        if self.targets is None:
            raise RuntimeError("load a batch first")
        x = self.canvas
        with torch.enable_grad():
            feats = self.features(x)
            terms = self.objective.terms(feats, x, self.targets, self.region, self.net.levels)
            total = terms["total"]
            if isinstance(self.optimiser, LBFGS):
                # L-BFGS minimises each objective divided by its value at the start of the
                # scale: the minimiser is the same, but L-BFGS has absolute thresholds (pairs
                # with yᵀs <= 1e-10 are dropped, the first step is 1/|g|₁) that would stall it
                # on small objectives (weak strength, flat paintings). It is unconstrained, so a
                # penalty (in those normalised units) keeps pixels inside [0, 1]: clipping them
                # only at the end would undo part of the optimisation.
                if first:
                    floor = total.detach().clamp(min=NORMALISER_FLOOR)
                    self.normaliser.copy_(floor.reciprocal())
                loss = total * self.normaliser
                loss = loss + self.weights["range"] * range_loss(x, self.region)
            else:
                loss = total
            grad = gradient(loss.sum(), x, self.shape.autocast)
        for name, value in terms.items():
            self.terms[name].copy_(value.detach())
        return loss.detach(), grad


class Workspaces:
    """The workspaces of recent shapes, most recent last, at most ``capacity`` of them.

    On a GPU, keeping them keeps their captured graphs: the next batch of a shape replays at
    once. ``recorder`` is given to each new workspace (None: eager iterations).
    """

    def __init__(
        self,
        capacity: int,
        make_recorder: Callable[[], Recorder | None] = lambda: None,
    ) -> None:
        self.capacity = capacity
        self.make_recorder = make_recorder
        self._entries: OrderedDict[Shape, Workspace] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, shape: Shape, net: VGGFeatures, device: torch.device) -> Workspace:
        found = self._entries.get(shape)
        if found is not None:
            self._entries.move_to_end(shape)
            return found
        while len(self._entries) >= max(1, self.capacity):
            self._entries.popitem(last=False)
        made = Workspace(shape, net, device, self.make_recorder())
        self._entries[shape] = made
        return made

    def recorded(self) -> int:
        """How many graphs the workspaces held have recorded."""
        return sum(w.runner.recorded for w in self._entries.values())

    def shapes(self) -> list[Shape]:
        """The shapes held, least recently used first."""
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()
