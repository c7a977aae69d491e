"""Pixels as tensors and the YCbCr colour space of colour control."""

from __future__ import annotations

import pytest
import torch

from engine import colour

from ..conftest import make_photo


def test_luminance_matching_and_colour_round_trip() -> None:
    x = torch.rand(1, 3, 5, 7, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(colour.ycbcr_to_rgb(colour.rgb_to_ycbcr(x)), x, atol=1e-5)
    y = colour.match_luminance(x[:, :1], 0.4, 0.1)
    assert y.mean().item() == pytest.approx(0.4, abs=1e-5)
    assert y.std().item() == pytest.approx(0.1, abs=1e-4)


def test_image_tensor_round_trip_is_exact() -> None:
    photo = make_photo(13, 7)
    x = colour.to_tensor(photo, torch.device("cpu"))
    assert x.shape == (1, 3, 7, 13) and x.dtype == torch.float32
    assert x.min().item() >= 0.0 and x.max().item() <= 1.0
    assert colour.to_image(x).tobytes() == photo.tobytes()
    # Out-of-range values are clamped, not wrapped.
    assert colour.to_image(x * 0 + 2).getextrema() == ((255, 255),) * 3


def test_colour_matching_takes_the_references_mean_and_covariance() -> None:
    g = torch.Generator().manual_seed(4)
    photo = 0.3 + 0.2 * torch.rand(1, 3, 20, 30, generator=g)  # dull, narrow
    mix = torch.tensor([[1.0, 0.2, 0.0], [0.0, 0.8, 0.3], [0.1, 0.0, 0.9]])
    painting = 0.5 + 0.1 * torch.einsum(
        "ij,bjhw->bihw", mix, torch.randn(1, 3, 16, 16, generator=g)
    )
    out = colour.match_colours(photo, painting)
    assert out.shape == photo.shape
    flat_out, flat_ref = out[0].flatten(1).double(), painting[0].flatten(1).double()
    assert torch.allclose(flat_out.mean(1), flat_ref.mean(1), atol=1e-3)
    assert torch.allclose(torch.cov(flat_out), torch.cov(flat_ref), atol=2e-4)
    # A linear map per pixel: the photo's edges are where they were.
    assert torch.corrcoef(torch.stack([photo.flatten(), out.flatten()]))[0, 1] > 0.5
