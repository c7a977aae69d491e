"""Where the VGG-19 weights come from: a local file, or torchvision's hash-checked download.

Order of precedence: an explicit path (``--weights``), then the ``ATELIER_VGG_WEIGHTS``
environment variable, then torchvision's ``VGG19_Weights.IMAGENET1K_V1`` in the torch cache
(downloaded there once, hash-checked). Nothing here ever falls back to random weights: tests build
a seeded random state dict themselves and pass it in explicitly.

Only the ``features.*`` part of the state dict is kept (about 80 MB of the 548 MB file); the
classifier is never used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

log = logging.getLogger(__name__)

WEIGHTS_ENV = "ATELIER_VGG_WEIGHTS"
FEATURES_PREFIX = "features."

FIX_HINT = (
    "Run `python -m engine fetch-weights` on a machine with internet access (it stores them in "
    "the torch cache, $TORCH_HOME), or pass --weights PATH / set "
    f"{WEIGHTS_ENV}=PATH to a VGG-19 state-dict file in torchvision's key format "
    "(features.0.weight, ...)."
)


class WeightsError(RuntimeError):
    """VGG-19 weights missing, unreadable or misshapen; the message says how to fix it."""

    code = "weights_missing"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


StateDict = dict[str, torch.Tensor]


def locate(
    explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The local weights file to use, or None for torchvision's default download."""
    if explicit:
        return Path(explicit)
    env = os.environ if environ is None else environ
    value = env.get(WEIGHTS_ENV, "").strip()
    return Path(value) if value else None


def features_only(state: Mapping[str, object]) -> StateDict:
    """The ``features.*`` tensors of a torchvision VGG state dict (classifier keys optional)."""
    kept = {
        k: v
        for k, v in state.items()
        if k.startswith(FEATURES_PREFIX) and isinstance(v, torch.Tensor)
    }
    if not kept:
        raise WeightsError(
            "the weights file has no 'features.*' keys, so it is not a torchvision VGG-19 state "
            f"dict. {FIX_HINT}"
        )
    return kept


def load_file(path: str | os.PathLike[str]) -> StateDict:
    """Load a local state-dict file (tensors only; no pickled code is executed)."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"VGG-19 weights file {str(p)!r} does not exist. {FIX_HINT}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise WeightsError(
            f"could not read VGG-19 weights from {str(p)!r} ({exc}). {FIX_HINT}"
        ) from exc
    if not isinstance(state, Mapping):
        raise WeightsError(f"{str(p)!r} does not hold a state dict. {FIX_HINT}")
    return features_only(state)


def cached_path() -> Path:
    """Where torchvision keeps (or would keep) the ImageNet VGG-19 file."""
    from torchvision.models import VGG19_Weights

    name = VGG19_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def download(*, progress: bool = False) -> StateDict:
    """Fetch torchvision's ImageNet weights into the torch cache (hash-checked) and return them."""
    from torchvision.models import VGG19_Weights

    state = VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=progress, check_hash=True)
    return features_only(state)


def load_default(*, allow_download: bool = True, progress: bool = False) -> StateDict:
    """torchvision's ImageNet weights from the cache, downloading them once if allowed."""
    path = cached_path()
    if path.is_file():
        return load_file(path)
    if not allow_download:
        raise WeightsError(f"VGG-19 weights are not in the torch cache ({path}). {FIX_HINT}")
    log.info("downloading VGG-19 weights to %s", path)
    try:
        return download(progress=progress)
    except WeightsError:
        raise
    except Exception as exc:  # URLError, hash mismatch (RuntimeError), disk full, ...
        raise WeightsError(
            f"VGG-19 weights are not in the torch cache ({path}) and could not be downloaded "
            f"({exc}). {FIX_HINT}"
        ) from exc


def load(
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    allow_download: bool = True,
) -> StateDict:
    """Resolve and load the weights: explicit path, then environment, then torchvision's cache."""
    path = locate(explicit, environ)
    if path is not None:
        return load_file(path)
    return load_default(allow_download=allow_download)
