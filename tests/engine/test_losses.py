"""Losses against naive references: plain Python loops over tiny tensors."""

from __future__ import annotations

import pytest
import torch

from engine.losses import Objective, Targets, content_loss, gram_matrix, style_loss, tv_loss


def naive_gram(f: torch.Tensor) -> list[list[list[float]]]:
    b, c, h, w = f.shape
    out = []
    for n in range(b):
        rows = []
        for i in range(c):
            row = []
            for j in range(c):
                s = 0.0
                for y in range(h):
                    for x in range(w):
                        s += float(f[n, i, y, x]) * float(f[n, j, y, x])
                row.append(s / (c * h * w))
            rows.append(row)
        out.append(rows)
    return out


def naive_mse(a: torch.Tensor, b: torch.Tensor) -> float:
    flat_a, flat_b = a.flatten().tolist(), b.flatten().tolist()
    return sum((x - y) ** 2 for x, y in zip(flat_a, flat_b, strict=True)) / len(flat_a)


def naive_tv(img: torch.Tensor) -> float:
    b, c, h, w = img.shape
    dx = [
        (float(img[n, k, y, x + 1]) - float(img[n, k, y, x])) ** 2
        for n in range(b)
        for k in range(c)
        for y in range(h)
        for x in range(w - 1)
    ]
    dy = [
        (float(img[n, k, y + 1, x]) - float(img[n, k, y, x])) ** 2
        for n in range(b)
        for k in range(c)
        for y in range(h - 1)
        for x in range(w)
    ]
    return sum(dx) / len(dx) + sum(dy) / len(dy)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_gram_matrix_matches_loops(gen: torch.Generator) -> None:
    f = torch.randn(2, 3, 4, 5, generator=gen)
    got = gram_matrix(f)
    assert got.shape == (2, 3, 3)
    assert got.dtype == torch.float32
    assert torch.allclose(got, torch.tensor(naive_gram(f)), atol=1e-6)


def test_gram_matrix_is_float32_for_half_features(gen: torch.Generator) -> None:
    f = torch.randn(1, 4, 3, 3, generator=gen)
    got = gram_matrix(f.to(torch.bfloat16))
    assert got.dtype == torch.float32
    assert torch.allclose(got, gram_matrix(f), rtol=2e-2, atol=1e-2)


def test_gram_matrix_is_size_independent_for_a_tiled_image(gen: torch.Generator) -> None:
    # Normalised by C·H·W: the same texture repeated 4 times has the same Gram matrix.
    f = torch.randn(1, 3, 4, 4, generator=gen)
    tiled = f.repeat(1, 1, 2, 2)
    assert torch.allclose(gram_matrix(tiled), gram_matrix(f), atol=1e-6)


def test_content_loss_matches_loops(gen: torch.Generator) -> None:
    a, b = torch.randn(1, 3, 4, 4, generator=gen), torch.randn(1, 3, 4, 4, generator=gen)
    assert content_loss(a, b).item() == pytest.approx(naive_mse(a, b), rel=1e-5)
    assert content_loss(a, a).item() == 0.0


def test_style_loss_matches_loops(gen: torch.Generator) -> None:
    grams = {"a": torch.randn(1, 2, 2, generator=gen), "b": torch.randn(1, 3, 3, generator=gen)}
    targets = {"a": torch.randn(1, 2, 2, generator=gen), "b": torch.randn(1, 3, 3, generator=gen)}
    weights = {"a": 0.25, "b": 2.0}
    expected = 0.25 * naive_mse(grams["a"], targets["a"]) + 2.0 * naive_mse(
        grams["b"], targets["b"]
    )
    assert style_loss(grams, targets, weights).item() == pytest.approx(expected, rel=1e-5)


def test_style_loss_needs_layers() -> None:
    with pytest.raises(ValueError, match="no style layers"):
        style_loss({}, {}, {})


def test_tv_loss_matches_loops(gen: torch.Generator) -> None:
    img = torch.rand(1, 3, 4, 5, generator=gen)
    assert tv_loss(img).item() == pytest.approx(naive_tv(img), rel=1e-5)
    assert tv_loss(torch.full((1, 3, 4, 4), 0.3)).item() == 0.0


def test_objective_weights_and_sums_terms(gen: torch.Generator) -> None:
    feats = {
        "c": torch.randn(1, 2, 3, 3, generator=gen),
        "s": torch.randn(1, 2, 3, 3, generator=gen),
    }
    targets = Targets(
        content=torch.randn(1, 2, 3, 3, generator=gen),
        grams={"s": torch.randn(1, 2, 2, generator=gen)},
    )
    canvas = torch.rand(1, 3, 4, 4, generator=gen)
    objective = Objective.create(
        content_layer="c",
        style_layers=["s"],
        layer_weights=None,
        content_weight=3.0,
        style_weight=10.0,
        tv_weight=0.5,
    )
    parts = objective.terms(feats, canvas, targets)
    assert parts["content"].item() == pytest.approx(
        3.0 * naive_mse(feats["c"], targets.content), rel=1e-5
    )
    grams = torch.tensor(naive_gram(feats["s"]))
    assert parts["style"].item() == pytest.approx(
        10.0 * naive_mse(grams, targets.grams["s"]), rel=1e-4
    )
    assert parts["tv"].item() == pytest.approx(0.5 * naive_tv(canvas), rel=1e-5)
    total = parts["content"] + parts["style"] + parts["tv"]
    assert parts["total"].item() == pytest.approx(total.item(), rel=1e-6)


def test_objective_without_tv_has_no_tv_term(gen: torch.Generator) -> None:
    objective = Objective.create(
        content_layer="c",
        style_layers=["s"],
        layer_weights=[1.0],
        content_weight=1,
        style_weight=1,
        tv_weight=0,
    )
    f = torch.randn(1, 2, 3, 3, generator=gen)
    parts = objective.terms(
        {"c": f, "s": f}, torch.rand(1, 3, 4, 4), Targets(content=f, grams={"s": gram_matrix(f)})
    )
    assert "tv" not in parts
    assert parts["total"].item() == 0.0


def test_objective_checks_layer_weights() -> None:
    with pytest.raises(ValueError, match="one weight per style layer"):
        Objective.create(
            content_layer="c",
            style_layers=["a", "b"],
            layer_weights=[1.0],
            content_weight=1,
            style_weight=1,
            tv_weight=0,
        )
