"""The VGG-19 feature extractor and where its weights come from."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import vgg19

from engine import weights
from engine.stylize import Stylist
from engine.vgg import LAYERS, STYLE_LAYERS, VGGFeatures, min_input_side

CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}


def plain_features(state: dict[str, Tensor]) -> nn.Sequential:
    """torchvision's vgg19().features with the given weights, nothing changed."""
    with torch.device("meta"):
        features = vgg19(weights=None).features
    features.load_state_dict(
        {k.removeprefix("features."): v for k, v in state.items()}, assign=True
    )
    return features.eval()


def normalise(x: Tensor) -> Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def test_layer_table_matches_torchvision(vgg_state: dict[str, Tensor]) -> None:
    features = plain_features(vgg_state)
    assert len(LAYERS) == len(features)
    for name, index in LAYERS.items():
        module = features[index]
        kind = name.rstrip("0123456789_")
        expected = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}[kind]
        assert isinstance(module, expected), name
        if kind == "conv":
            assert isinstance(module, nn.Conv2d)
            assert module.out_channels == CHANNELS[int(name[4])], name


def test_features_equal_plain_torchvision_at_every_requested_layer(
    vgg_state: dict[str, Tensor],
) -> None:
    net = VGGFeatures(vgg_state)
    x = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    out = net(x)
    assert set(out) == {"relu4_2", *STYLE_LAYERS}
    plain = plain_features(vgg_state)
    h = normalise(x)
    with torch.no_grad():
        for index, module in enumerate(plain):
            h = module(h)
            for name, i in LAYERS.items():
                if i == index and name in out:
                    assert torch.allclose(out[name], h, atol=1e-5), name


def test_network_is_truncated_after_the_deepest_layer(vgg_state: dict[str, Tensor]) -> None:
    assert len(VGGFeatures(vgg_state).body) == LAYERS["relu5_1"] + 1
    shallow = VGGFeatures(vgg_state, layers=["relu2_1"])
    assert len(shallow.body) == LAYERS["relu2_1"] + 1
    out = shallow(torch.rand(1, 3, 32, 32))
    assert list(out) == ["relu2_1"]
    assert out["relu2_1"].shape == (1, 128, 16, 16)


def test_shapes_follow_the_poolings(vgg_state: dict[str, Tensor]) -> None:
    out = VGGFeatures(vgg_state)(torch.rand(1, 3, 32, 64))
    assert out["relu1_1"].shape == (1, 64, 32, 64)
    assert out["relu3_1"].shape == (1, 256, 8, 16)
    assert out["relu4_2"].shape == (1, 512, 4, 8)
    assert out["relu5_1"].shape == (1, 512, 2, 4)


def test_frozen_eval_and_gradient_reaches_the_input(vgg_state: dict[str, Tensor]) -> None:
    net = VGGFeatures(vgg_state)
    net.train()
    assert not net.training
    assert all(not p.requires_grad for p in net.parameters())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    net(x)["relu5_1"].sum().backward()
    assert x.grad is not None
    assert x.grad.abs().sum() > 0


def test_average_pooling_replaces_max_pooling(vgg_state: dict[str, Tensor]) -> None:
    avg = VGGFeatures(vgg_state, pooling="avg")
    assert not any(isinstance(m, nn.MaxPool2d) for m in avg.body)
    assert sum(isinstance(m, nn.AvgPool2d) for m in avg.body) == 4
    x = torch.rand(1, 3, 32, 32)
    assert not torch.allclose(avg(x)["relu5_1"], VGGFeatures(vgg_state)(x)["relu5_1"])
    with pytest.raises(ValueError, match="pooling"):
        VGGFeatures(vgg_state, pooling="l2")


def test_requested_conv_output_is_not_overwritten_by_its_relu(vgg_state: dict[str, Tensor]) -> None:
    out = VGGFeatures(vgg_state, layers=["conv1_1", "relu1_1"])(torch.rand(1, 3, 16, 16))
    assert (out["conv1_1"] < 0).any()
    assert torch.equal(out["relu1_1"], out["conv1_1"].clamp(min=0))


def test_weights_are_shared_not_copied(vgg_state: dict[str, Tensor]) -> None:
    a, b = VGGFeatures(vgg_state), VGGFeatures(vgg_state, pooling="avg")
    assert (
        a.body[0].weight.data_ptr()
        == b.body[0].weight.data_ptr()
        == vgg_state["features.0.weight"].data_ptr()
    )


def test_unknown_layer_and_min_side() -> None:
    with pytest.raises(ValueError, match="unknown VGG-19 layer"):
        min_input_side(["relu9_9"])
    assert min_input_side(["relu1_1"]) == 1
    assert min_input_side(["relu4_2"]) == 8
    assert min_input_side(STYLE_LAYERS) == 16


# ----------------------------------------------------------------------------------------------
# weights.py


def test_load_file_accepts_features_only_and_full_files(
    tmp_path: Path, vgg_state: dict[str, Tensor]
) -> None:
    full = dict(vgg_state)
    full["classifier.0.weight"] = torch.zeros(2, 2)
    torch.save(full, tmp_path / "full.pth")
    loaded = weights.load_file(tmp_path / "full.pth")
    assert set(loaded) == set(vgg_state)
    assert torch.equal(loaded["features.0.weight"], vgg_state["features.0.weight"])


def test_load_file_errors_say_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(weights.WeightsError, match="does not exist") as missing:
        weights.load_file(tmp_path / "nope.pth")
    assert "fetch-weights" in missing.value.message
    assert "--weights" in missing.value.message
    assert missing.value.code == "weights_missing"
    torch.save({"classifier.0.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(weights.WeightsError, match="no 'features"):
        weights.load_file(tmp_path / "wrong.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(weights.WeightsError, match="could not read"):
        weights.load_file(tmp_path / "junk.pth")


def test_truncated_or_misshapen_weights_fail_clearly(vgg_state: dict[str, Tensor]) -> None:
    partial = {k: v for k, v in vgg_state.items() if not k.startswith("features.28.")}
    with pytest.raises(weights.WeightsError, match=r"lack features\.28"):
        VGGFeatures(partial)
    VGGFeatures(partial, layers=["relu4_2"])  # shallower network does not need them
    bad = dict(vgg_state)
    bad["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    with pytest.raises(weights.WeightsError, match="do not fit"):
        VGGFeatures(bad)


def test_explicit_path_wins_over_environment(tmp_path: Path) -> None:
    env = {weights.WEIGHTS_ENV: "/from/env.pth"}
    assert weights.locate("/explicit.pth", env) == Path("/explicit.pth")
    assert weights.locate(None, env) == Path("/from/env.pth")
    assert weights.locate(None, {}) is None


def test_environment_variable_is_used(
    monkeypatch: pytest.MonkeyPatch, vgg_weights_path: Path
) -> None:
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(vgg_weights_path))
    assert Stylist(device="cpu").kind == "cpu"


@pytest.fixture
def empty_torch_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(weights.WEIGHTS_ENV, raising=False)
    return tmp_path / "torch"


def test_missing_weights_without_network_give_the_clear_message(
    monkeypatch: pytest.MonkeyPatch, empty_torch_cache: Path
) -> None:
    def offline(*, progress: bool = False) -> dict[str, Tensor]:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(weights, "download", offline)
    with pytest.raises(weights.WeightsError) as info:
        Stylist(device="cpu")
    message = info.value.message
    assert str(empty_torch_cache) in message
    assert "could not be downloaded" in message
    assert "python -m engine fetch-weights" in message
    assert weights.WEIGHTS_ENV in message


def test_no_download_when_not_allowed(
    monkeypatch: pytest.MonkeyPatch, empty_torch_cache: Path
) -> None:
    def forbidden(*, progress: bool = False) -> dict[str, Tensor]:
        raise AssertionError("must not download")

    monkeypatch.setattr(weights, "download", forbidden)
    with pytest.raises(weights.WeightsError, match="not in the torch cache"):
        Stylist(device="cpu", allow_download=False)


def test_cached_default_file_is_loaded(
    empty_torch_cache: Path, vgg_state: dict[str, Tensor]
) -> None:
    path = weights.cached_path()
    assert path.is_relative_to(empty_torch_cache)
    path.parent.mkdir(parents=True)
    torch.save(vgg_state, path)
    loaded = weights.load_default(allow_download=False)
    assert torch.equal(loaded["features.34.weight"], vgg_state["features.34.weight"])
