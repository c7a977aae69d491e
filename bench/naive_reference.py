"""A deliberately straightforward Gatys et al. (2016) implementation, the benchmark's yardstick.

Single scale, L-BFGS for a fixed number of iterations from the photo, the paper's layers, fixed
loss weights, plain ``torchvision.models.vgg19().features`` with max pooling run through all its
layers. It is written the way most tutorials write it, without Atelier's tricks, but it is not
sabotaged: the network is frozen and in eval mode, targets are computed once, and it uses the same
loss definitions as Atelier (so that the two optimise the same objective).

:func:`objective` is also the benchmark's common evaluator: both results are scored with it, on
their 8-bit images, at the same size.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import Tensor, nn

# Indices in vgg19().features: relu4_2 for content, relu1_1 ... relu5_1 for style.
CONTENT_INDEX = 22
STYLE_INDICES = (1, 6, 11, 20, 29)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@dataclass(frozen=True)
class LossWeights:
    content: float = 1.0
    style: float = 3e5


def plain_vgg19(state: Mapping[str, Tensor], device: torch.device) -> nn.Sequential:
    """torchvision.models.vgg19().features with the given ``features.*`` weights, frozen."""
    features = torchvision.models.vgg19().features
    features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
    features.to(device).eval()
    for p in features.parameters():
        p.requires_grad_(False)
    return features


def image_to_tensor(img: Image.Image, device: torch.device) -> Tensor:
    return torchvision.transforms.functional.to_tensor(img).unsqueeze(0).to(device)


def tensor_to_image(x: Tensor) -> Image.Image:
    return torchvision.transforms.functional.to_pil_image(x.detach()[0].clamp(0, 1).cpu())


def resize(img: Image.Image, long_side: int) -> Image.Image:
    scale = long_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def features(vgg: nn.Sequential, x: Tensor) -> dict[int, Tensor]:
    out = {}
    h = (x - MEAN.to(x.device)) / STD.to(x.device)
    for i, layer in enumerate(vgg):
        h = layer(h)
        out[i] = h
    return out


def gram(f: Tensor) -> Tensor:
    b, c, h, w = f.shape
    f = f.view(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def targets(vgg: nn.Sequential, photo: Tensor, painting: Tensor) -> tuple[Tensor, list[Tensor]]:
    with torch.no_grad():
        content = features(vgg, photo)[CONTENT_INDEX]
        style = features(vgg, painting)
        grams = [gram(style[i]) for i in STYLE_INDICES]
    return content, grams


def loss(
    vgg: nn.Sequential, x: Tensor, content: Tensor, grams: list[Tensor], w: LossWeights
) -> Tensor:
    f = features(vgg, x)
    content_loss = F.mse_loss(f[CONTENT_INDEX], content)
    style_loss = sum(F.mse_loss(gram(f[i]), g) for i, g in zip(STYLE_INDICES, grams, strict=True))
    return w.content * content_loss + w.style * style_loss / len(STYLE_INDICES)


def run(
    vgg: nn.Sequential,
    photo: Image.Image,
    painting: Image.Image,
    *,
    size: int = 256,
    iterations: int = 300,
    weights: LossWeights = LossWeights(),
) -> tuple[Image.Image, float]:
    """Paint at ``size`` px; return the image and the wall seconds (targets + optimisation)."""
    device = next(vgg.parameters()).device
    started = time.perf_counter()
    photo_t = image_to_tensor(resize(photo, size), device)
    painting_t = image_to_tensor(resize(painting, size), device)
    content, grams = targets(vgg, photo_t, painting_t)
    x = photo_t.clone().requires_grad_(True)
    # Tolerances off: it runs all its iterations (the defaults can stop it early on the tiny
    # objective values of random weights, which would flatter Atelier's time).
    optimizer = torch.optim.LBFGS(
        [x], max_iter=iterations, tolerance_grad=0.0, tolerance_change=0.0
    )
    evaluations = 0

    def closure() -> Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        value = loss(vgg, x, content, grams, weights)
        value.backward()
        return value

    optimizer.step(closure)
    result = tensor_to_image(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    if evaluations < iterations:
        print(f"(the reference stopped after {evaluations} of {iterations} evaluations)")
    return result, time.perf_counter() - started


def objective(
    vgg: nn.Sequential,
    image: Image.Image,
    photo: Image.Image,
    painting: Image.Image,
    *,
    size: int = 256,
    weights: LossWeights = LossWeights(),
) -> float:
    """The common evaluator: the objective of an 8-bit ``image`` at ``size`` px."""
    device = next(vgg.parameters()).device
    photo_s = resize(photo, size)
    image_t = image_to_tensor(image.resize(photo_s.size, Image.Resampling.LANCZOS), device)
    content, grams = targets(
        vgg, image_to_tensor(photo_s, device), image_to_tensor(resize(painting, size), device)
    )
    with torch.no_grad():
        return float(loss(vgg, image_t, content, grams, weights))
