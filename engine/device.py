"""Which device paints, in what precision, and how cuDNN is tuned.

Mixed precision on CUDA: VGG runs under autocast (bf16 where supported, else fp16); Gram matrices,
losses and the canvas stay float32 (see ``losses.py``). Under fp16 the backward pass is scaled
(:data:`FP16_LOSS_SCALE`); bf16 has float32's range and needs no scaling. CPU and MPS paint in
float32 as before.

cuDNN autotuning (``benchmark`` mode) is on for CUDA: every scale of a painting runs hundreds of
iterations at one fixed shape (and canvas sizes are bucketed, ``schedule.bucket_side``), so the
one-off search for the fastest convolution algorithms per shape pays for itself at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

import torch
from torch import Tensor

from engine.errors import PaintError

# Backward under fp16 autocast multiplies the objective by this and divides the canvas gradient
# by it again (a power of two: exact). Unscaled, the gradients reaching the fp16 features are
# tiny: the objective is about 1 (normalised per scale) and every term is a mean over up to
# millions of elements. Measured at 512 px: median 6e-8 to 3e-6 per element, all of them below
# fp16's smallest normal number (6e-5) and half of relu5_1's below its smallest subnormal (6e-8,
# flushed to zero); at 1024 px they are four times smaller still. Scaled, the largest is about
# 1.3 at 512 px and 85 at 64 px, far from fp16's 65504. bf16 has float32's range and needs none.
FP16_LOSS_SCALE: Final = 2.0**16


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


def autocast_dtype(
    device: torch.device, precision: str, *, bf16_supported: bool | None = None
) -> torch.dtype | None:
    """The dtype VGG runs in under autocast, or None for float32.

    ``auto`` is bf16 on a CUDA device that supports it and fp16 (with a loss scale) on older
    ones; CPU and MPS stay float32. ``bf16_supported`` overrides asking the device (tests).
    """
    if device.type != "cuda" or precision in ("fp32", "tf32"):
        return None
    if precision == "fp16":
        return torch.float16
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    if precision == "bf16" or bf16_supported:
        return torch.bfloat16
    return torch.float16 if precision == "auto" else None


def tune(device: torch.device) -> None:
    """Let cuDNN pick the fastest algorithms per shape on CUDA (see the module's docstring)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def set_matmul_precision(device: torch.device, precision: str) -> None:
    """Allow TF32 matrix products for ``tf32`` (and ``auto`` on CUDA); forbid them for ``fp32``.

    These are process-wide torch flags, set before every painting so that each one gets what its
    settings ask for.
    """
    if precision == "tf32" or (precision == "auto" and device.type == "cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif precision == "fp32" and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Run the enclosed forward pass under autocast to ``dtype``; no-op for None (float32).

    Without autocast's weight cache: a cached cast made while a CUDA graph is recorded would
    belong to the graph's memory and be freed under it (torch's documentation requires
    ``cache_enabled=False`` with graphs). Casting VGG's weights in every pass instead costs
    about 120 MB of memory traffic, some 40 µs at an H100's 3 TB/s (an estimate, not measured).
    """
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=False):
        yield


def gradient(loss: Tensor, canvas: Tensor, autocast: torch.dtype | None) -> Tensor:
    """d loss / d canvas, with a loss scale under fp16 autocast (see ``FP16_LOSS_SCALE``).

    Returned rather than accumulated into ``canvas.grad``, so that inside a captured CUDA graph
    the gradient is one tensor the graph owns and refills at every replay.
    """
    if autocast is not torch.float16:
        (grad,) = torch.autograd.grad(loss, canvas)
        return grad
    (grad,) = torch.autograd.grad(loss * FP16_LOSS_SCALE, canvas)
    return grad.div_(FP16_LOSS_SCALE)
