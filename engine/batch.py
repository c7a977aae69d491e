"""How several paintings share one pass: canvases padded into one tensor, and where each one lies.

A batch stacks the jobs' canvases top-left aligned in one (B, C, H, W) tensor whose size is the
largest canvas rounded up to the size bucket (``schedule.bucket_side``). Padding must not change
any job's painting, so the padded run is made to compute, on each job's own pixels, exactly
what that job computes alone:

* In the network, everything outside a job's region is zeroed before every convolution (the
  normalised input, every convolution's output, every pooling's output; ``vgg.py``). A 3x3
  convolution at the edge of the region then reads zeros, as the zero padding of the job's own
  run would give it. The region shrinks with each 2x2 pooling as the job's own run does
  (``floor(h / 2)``): a pooling window that straddles the edge is outside, as it does not exist
  alone.
* Features outside the region are therefore zero, so they add nothing to the Gram matrices or
  the content term; the losses divide by the region's size, not the tensor's (``losses.py``).
* Total variation counts only neighbour pairs with both pixels inside, and the range penalty
  only pixels inside.
* The optimiser never moves padding: its gradient there is zero, and L-BFGS's directions are
  combinations of gradients and past steps, so they are zero there too.

A job that keeps its photo's colours paints one luminance channel. In a batch with RGB jobs its
canvas has three channels of which only the first is painted (the network sees it as grey); the
other two are masked like padding. A batch of luminance-only jobs has one channel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Layout:
    """The sizes of a batch's canvases, (height, width) each, and the padded size they share."""

    sizes: tuple[tuple[int, int], ...]
    channels: tuple[int, ...]  # 3 for RGB, 1 for a luminance-only canvas (keep_colors)
    height: int
    width: int

    @classmethod
    def of(
        cls, sizes: Sequence[tuple[int, int]], channels: Sequence[int], quantum: int = 1
    ) -> Layout:
        """The layout for canvases of ``sizes`` (height, width), padded to a multiple of
        ``quantum`` (1: just the largest)."""
        if not sizes or len(sizes) != len(channels):
            raise ValueError("one size and one channel count per canvas are needed")
        if any(c not in (1, 3) for c in channels):
            raise ValueError("a canvas has 1 or 3 channels")
        height = max(h for h, _ in sizes)
        width = max(w for _, w in sizes)
        return cls(
            sizes=tuple((int(h), int(w)) for h, w in sizes),
            channels=tuple(channels),
            height=quantum * math.ceil(height / quantum),
            width=quantum * math.ceil(width / quantum),
        )

    @property
    def batch(self) -> int:
        return len(self.sizes)

    @property
    def depth(self) -> int:
        """Channels of the batch tensor: 1 when every canvas is luminance-only, else 3."""
        return 1 if all(c == 1 for c in self.channels) else 3

    @property
    def padded(self) -> bool:
        """Whether any canvas leaves part of the tensor unused (then masks are needed)."""
        spatial = any(size != (self.height, self.width) for size in self.sizes)
        return spatial or any(c != self.depth for c in self.channels)

    @property
    def mixed(self) -> bool:
        """Whether luminance-only and RGB canvases share the batch."""
        return len(set(self.channels)) > 1

    def level_size(self, level: int) -> tuple[int, int]:
        """The tensor's size after ``level`` 2x2 poolings."""
        return self.height >> level, self.width >> level

    def region(self, device: torch.device, levels: int) -> Region:
        """The masks and counts of this layout, for a network with ``levels - 1`` poolings."""
        b, c = self.batch, self.depth
        spatial, counts = [], []
        for level in range(levels):
            lh, lw = self.level_size(level)
            mask = torch.zeros(b, 1, lh, lw)
            for i, (h, w) in enumerate(self.sizes):
                mask[i, :, : h >> level, : w >> level] = 1.0
            spatial.append(mask.to(device))
            counts.append(mask.sum(dim=(1, 2, 3)).to(device))
        pixels = torch.zeros(b, c, self.height, self.width)
        for i, ((h, w), channels) in enumerate(zip(self.sizes, self.channels, strict=True)):
            pixels[i, :channels, :h, :w] = 1.0
        across = pixels[..., :, 1:] * pixels[..., :, :-1]
        down = pixels[..., 1:, :] * pixels[..., :-1, :]
        luminance = torch.tensor([ch == 1 for ch in self.channels]).view(b, 1, 1, 1)
        return Region(
            spatial=tuple(spatial),
            counts=tuple(counts),
            pixels=pixels.to(device),
            pixel_count=pixels.sum(dim=(1, 2, 3)).to(device),
            across=across.to(device),
            across_count=across.sum(dim=(1, 2, 3)).to(device),
            down=down.to(device),
            down_count=down.sum(dim=(1, 2, 3)).to(device),
            luminance=luminance.to(device),
        )

    def pad(self, canvases: Sequence[Tensor]) -> Tensor:
        """Stack (1, c, h, w) canvases into the (B, C, H, W) batch tensor, zeros around them."""
        first = canvases[0]
        out = first.new_zeros(self.batch, self.depth, self.height, self.width)
        for i, x in enumerate(canvases):
            _, c, h, w = x.shape
            out[i, :c, :h, :w] = x[0]
        return out

    def crop(self, batch: Tensor, index: int) -> Tensor:
        """One canvas, (1, c, h, w), out of the batch tensor (a view)."""
        h, w = self.sizes[index]
        c = self.channels[index]
        return batch[index : index + 1, :c, :h, :w]


@dataclass(frozen=True)
class Region:
    """Where the canvases of a layout lie: masks (1 inside, 0 outside) and their sizes.

    ``spatial[k]`` is (B, 1, H >> k, W >> k): each canvas's region after k poolings, and
    ``counts[k]`` its number of positions (B,). ``pixels`` is (B, C, H, W) over the canvas's
    own channels; ``across`` and ``down`` mark horizontal and vertical neighbour pairs with both
    pixels inside. ``luminance`` (B, 1, 1, 1) marks luminance-only canvases in a mixed batch.
    """

    spatial: tuple[Tensor, ...]
    counts: tuple[Tensor, ...]
    pixels: Tensor
    pixel_count: Tensor
    across: Tensor
    across_count: Tensor
    down: Tensor
    down_count: Tensor
    luminance: Tensor

    def tensors(self) -> tuple[Tensor, ...]:
        return (
            *self.spatial,
            *self.counts,
            self.pixels,
            self.pixel_count,
            self.across,
            self.across_count,
            self.down,
            self.down_count,
            self.luminance,
        )

    def clone(self) -> Region:
        """A copy with tensors of its own (a workspace keeps one and loads others into it)."""
        return Region(
            spatial=tuple(t.clone() for t in self.spatial),
            counts=tuple(t.clone() for t in self.counts),
            pixels=self.pixels.clone(),
            pixel_count=self.pixel_count.clone(),
            across=self.across.clone(),
            across_count=self.across_count.clone(),
            down=self.down.clone(),
            down_count=self.down_count.clone(),
            luminance=self.luminance.clone(),
        )

    def copy_(self, other: Region) -> None:
        """Take ``other``'s values into these tensors (same shapes), keeping their addresses."""
        for mine, theirs in zip(self.tensors(), other.tensors(), strict=True):
            mine.copy_(theirs)
