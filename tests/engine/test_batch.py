"""Padded batches: the layout, and masks that keep padding out of every term (naive references)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from engine.batch import Layout
from engine.losses import content_loss, gram_matrix, range_loss, tv_loss
from engine.vgg import VGGFeatures

from .test_losses import naive_gram, naive_mse, naive_tv


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(5)


def test_a_layout_pads_to_the_largest_canvas_rounded_to_the_quantum() -> None:
    layout = Layout.of([(37, 29), (20, 45)], [3, 3], quantum=16)
    assert (layout.height, layout.width, layout.depth) == (48, 48, 3)
    assert layout.padded and not layout.mixed
    exact = Layout.of([(32, 48)], [3])
    assert (exact.height, exact.width, exact.padded) == (32, 48, False)
    assert Layout.of([(8, 8), (8, 8)], [1, 1]).depth == 1
    mixed = Layout.of([(8, 8), (8, 8)], [1, 3])
    assert mixed.mixed and mixed.padded and mixed.depth == 3
    with pytest.raises(ValueError, match="1 or 3 channels"):
        Layout.of([(8, 8)], [2])


def test_pad_and_crop_round_trip(gen: torch.Generator) -> None:
    a, b = torch.rand(1, 3, 5, 7, generator=gen), torch.rand(1, 1, 6, 4, generator=gen)
    layout = Layout.of([(5, 7), (6, 4)], [3, 1], quantum=4)
    batch = layout.pad([a, b])
    assert batch.shape == (2, 3, 8, 8)
    assert torch.equal(layout.crop(batch, 0), a) and torch.equal(layout.crop(batch, 1), b)
    assert torch.allclose(batch.sum(), a.sum() + b.sum())  # zeros everywhere else


def test_region_masks_shrink_as_a_pooling_does(gen: torch.Generator) -> None:
    layout = Layout.of([(37, 29), (16, 16)], [3, 1], quantum=16)
    region = layout.region(torch.device("cpu"), levels=3)
    # An odd side loses its last row at each 2x2 pooling (floor), as the canvas alone does.
    assert [c.tolist() for c in region.counts] == [[37 * 29, 256], [18 * 14, 64], [9 * 7, 16]]
    assert region.spatial[1].shape == (2, 1, 24, 16)  # 48x32 halved
    assert region.pixel_count.tolist() == [3 * 37 * 29, 1 * 16 * 16]  # own channels only
    assert region.across_count.tolist() == [3 * 37 * 28, 16 * 15]
    assert region.luminance.flatten().tolist() == [False, True]


def test_masked_network_features_equal_the_canvas_painted_alone(
    vgg_state: dict[str, Tensor], gen: torch.Generator
) -> None:
    # Odd sizes: the padded batch must reproduce each canvas's own features inside its region
    # (convolutions at the edge read zeros, straddling poolings are cut) and zeros outside.
    net = VGGFeatures(vgg_state)
    sizes = [(37, 29), (21, 40)]
    canvases = [torch.rand(1, 3, h, w, generator=gen) for h, w in sizes]
    layout = Layout.of(sizes, [3, 3], quantum=16)
    region = layout.region(torch.device("cpu"), net.depth + 1)
    with torch.no_grad():
        together = net(layout.pad(canvases), region.spatial)
        for i, canvas in enumerate(canvases):
            alone = net(canvas)
            for name, feats in alone.items():
                _, _, h, w = feats.shape
                inside = together[name][i : i + 1, :, :h, :w]
                assert torch.allclose(inside, feats, rtol=1e-4, atol=1e-5), name
                outside = together[name][i].clone()
                outside[:, :h, :w] = 0
                assert outside.abs().max() == 0, name


def test_masked_gram_and_content_equal_the_unpadded_ones(gen: torch.Generator) -> None:
    # Features of two samples, 3x5 and 4x2, zero-padded into 4x6: per-sample Gram matrices and
    # content losses by the region's size equal naive loops over the unpadded features.
    f = [torch.randn(1, 3, 3, 5, generator=gen), torch.randn(1, 3, 4, 2, generator=gen)]
    t = [torch.randn(1, 3, 3, 5, generator=gen), torch.randn(1, 3, 4, 2, generator=gen)]
    layout = Layout.of([(3, 5), (4, 2)], [3, 3], quantum=6)
    count = layout.region(torch.device("cpu"), levels=1).counts[0]
    grams = gram_matrix(layout.pad(f), count)
    content = content_loss(layout.pad(f), layout.pad(t), count)
    for i in range(2):
        assert torch.allclose(grams[i], torch.tensor(naive_gram(f[i])[0]), atol=1e-6)
        assert content[i].item() == pytest.approx(naive_mse(f[i], t[i]), rel=1e-5)


def test_masked_tv_and_range_look_only_inside(gen: torch.Generator) -> None:
    a = torch.rand(1, 3, 3, 5, generator=gen) * 1.4 - 0.2  # some pixels out of range
    b = torch.rand(1, 1, 4, 2, generator=gen)
    layout = Layout.of([(3, 5), (4, 2)], [3, 1], quantum=6)
    region = layout.region(torch.device("cpu"), levels=1)
    batch = layout.pad([a, b])
    batch[:, :, 4:, :] = 7.0  # garbage in the padding must not count
    batch[1, 1:] = 7.0  # nor in a luminance canvas's unused channels
    tv = tv_loss(batch, region)
    assert tv[0].item() == pytest.approx(naive_tv(a), rel=1e-5)
    assert tv[1].item() == pytest.approx(naive_tv(b), rel=1e-5)
    ranges = range_loss(batch, region)
    assert ranges[0].item() == pytest.approx(range_loss(a).item(), rel=1e-5)
    assert ranges[1].item() == 0.0
