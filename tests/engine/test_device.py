"""Choosing the device, autocast and the fp16 loss scale."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from engine import device
from engine.errors import PaintError


def test_explicit_device_wins_and_missing_cuda_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    assert device.pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert device.pick_device(None) == torch.device("cpu")
    assert device.pick_device("auto") == torch.device("cpu")
    with pytest.raises(PaintError, match="CUDA is not available"):
        device.pick_device("cuda")
    for name in ("gpu", "cuda:x", "meta"):  # a one-line error, not torch's RuntimeError
        with pytest.raises(PaintError, match="device"):
            device.pick_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert device.pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(PaintError, match="only 1 CUDA devices"):
        device.pick_device("cuda:1")


def test_autocast_only_on_cuda() -> None:
    assert device.autocast_dtype(torch.device("cpu"), "auto") is None
    assert device.autocast_dtype(torch.device("cpu"), "bf16") is None
    assert device.autocast_dtype(torch.device("mps"), "auto") is None
    assert device.autocast_dtype(torch.device("cuda"), "fp32") is None
    assert device.autocast_dtype(torch.device("cuda"), "fp16") is torch.float16


@pytest.mark.parametrize(
    ("precision", "bf16", "expected"),
    [
        ("auto", True, torch.bfloat16),  # Ampere and later
        ("auto", False, torch.float16),  # older GPUs: fp16 with the loss scale
        ("bf16", False, torch.bfloat16),  # asked for explicitly
        ("tf32", True, None),
        ("fp32", True, None),
    ],
)
def test_auto_precision_is_bf16_where_the_gpu_has_it(
    precision: str, bf16: bool, expected: torch.dtype | None
) -> None:
    cuda = torch.device("cuda")
    assert device.autocast_dtype(cuda, precision, bf16_supported=bf16) is expected


@pytest.fixture
def cudnn_benchmark() -> Iterator[None]:
    saved = torch.backends.cudnn.benchmark
    yield
    torch.backends.cudnn.benchmark = saved


@pytest.mark.usefixtures("cudnn_benchmark")
def test_cudnn_autotuning_is_on_for_cuda_only() -> None:
    torch.backends.cudnn.benchmark = False
    device.tune(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    device.tune(torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is True


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, None])
def test_backward_under_fp16_does_not_lose_small_gradients(dtype: torch.dtype | None) -> None:
    # What a painting's gradients look like on their way through fp16 features: per element
    # about 1e-9 at 1024 px (the objective is ~1, a mean over millions of elements).
    canvas = torch.ones(1, 3, 4, 4, requires_grad=True)
    features = canvas.to(dtype or torch.float32)  # the cast autocast makes at the first conv
    loss = (features.float() * 1e-9).sum()
    grad = device.gradient(loss, canvas, dtype)
    assert canvas.grad is None  # returned, not accumulated (a graph owns it)
    expected = torch.full_like(canvas, 1e-9)
    tolerance = 1e-2 if dtype is torch.bfloat16 else 1e-3  # bf16 keeps 8 bits, fp16 11
    assert torch.allclose(grad, expected, rtol=tolerance, atol=0)


@pytest.fixture
def tf32_flags() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.usefixtures("tf32_flags")
def test_matmul_precision_follows_the_setting_on_cuda() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")

    def flags() -> tuple[bool, bool]:
        return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32

    device.set_matmul_precision(cuda, "fp32")
    assert flags() == (False, False)
    device.set_matmul_precision(cpu, "auto")  # not CUDA: left as it was
    assert flags() == (False, False)
    device.set_matmul_precision(cuda, "auto")
    assert flags() == (True, True)
    device.set_matmul_precision(cuda, "bf16")  # autocast decides; the flags are left alone
    assert flags() == (True, True)
