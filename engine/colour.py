"""Pixels as tensors, and the colour space that colour control works in.

Colour control (Gatys et al. 2017, "Controlling Perceptual Factors"): with ``keep_colors`` only
the luminance is stylised. The painting's luminance is matched to the photo's mean and spread
(:func:`match_luminance`), the canvas is a single luminance channel fed to VGG as grey RGB, and the
photo's chroma (YCbCr, :func:`rgb_to_ycbcr`) is put back at the end (:func:`ycbcr_to_rgb`).
"""

from __future__ import annotations

import ctypes

import torch
from PIL import Image
from torch import Tensor


def to_tensor(img: Image.Image, device: torch.device) -> Tensor:
    """PIL RGB -> (1, 3, H, W) float32 in [0, 1]."""
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    x = data.view(rgb.height, rgb.width, 3).permute(2, 0, 1).unsqueeze(0)
    return x.to(device=device, dtype=torch.float32).div_(255.0)


def to_image(x: Tensor) -> Image.Image:
    """(1, 3, H, W) in [0, 1] -> PIL RGB (clamped and rounded; a fresh image with no metadata)."""
    return pixels_to_image(to_pixels(x))


def to_pixels(x: Tensor) -> Tensor:
    """(1, 3, H, W) in [0, 1] -> (3, H, W) uint8, clamped and rounded, on the same device: a
    copy that waits for nothing (a timelapse keeps frames so while painting on a GPU)."""
    return x.detach()[0].float().clamp(0, 1).mul(255).round().to(torch.uint8)


def pixels_to_image(u8: Tensor) -> Image.Image:
    """(3, H, W) uint8 on any device -> PIL RGB (a fresh image with no metadata)."""
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


def match_colours(x: Tensor, reference: Tensor) -> Tensor:
    """``x`` (1, 3, H, W) with its colours' mean and covariance moved to ``reference``'s.

    A linear map per pixel, x' = A (x - μₓ) + μᵣ with A = Lᵣ Lₓ⁻¹ (Cholesky factors of the two
    colour covariances), clamped to [0, 1]. The painting's colour statistics are much of what
    its Gram matrix at relu1_1 holds, so a photo recoloured this way starts the optimisation
    far closer to the style while keeping every edge of the photo (``init="colour"``).
    The 3x3 statistics are computed in float64.
    """
    xf = x[0].flatten(1).double()  # (3, H·W)
    rf = reference[0].flatten(1).double()
    eps = 1e-5 * torch.eye(3, dtype=torch.float64, device=x.device)
    mean_x, mean_r = xf.mean(dim=1, keepdim=True), rf.mean(dim=1, keepdim=True)
    chol_x = torch.linalg.cholesky(torch.cov(xf) + eps)
    chol_r = torch.linalg.cholesky(torch.cov(rf) + eps)
    a = chol_r @ torch.linalg.inv(chol_x)
    out = (a @ (xf - mean_x) + mean_r).to(x.dtype)
    return out.view_as(x).clamp_(0, 1)


def match_luminance(y: Tensor, mean: float, std: float) -> Tensor:
    """Shift and scale a luminance channel to the given mean and spread (Gatys et al. 2017, §5)."""
    return (y - y.mean()) / (y.std() + 1e-6) * std + mean
