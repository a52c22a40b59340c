"""What every feature backbone shares: identity (name, weights hash, preprocessing), batching, devices.

A backbone is identified before its network is loaded (the weights file is only
hashed), so a cache hit never pays for loading the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from aigc_eval.errors import UserError
from aigc_eval.files import resolve_device


def clean_resize(image: np.ndarray, size: int) -> np.ndarray:
    """clean-fid's "clean" resize: PIL bicubic per channel on float32 ('F' mode), clipped to [0, 255].

    Returns size×size×3 float32 without re-quantising to uint8 (that rounding is
    what clean-fid's "clean" mode avoids). An image already at the size is
    returned unchanged (PIL copies it).
    """
    channels = []
    for c in range(3):
        plane = Image.fromarray(np.ascontiguousarray(image[:, :, c], dtype=np.float32))
        resized = plane.resize((size, size), resample=Image.Resampling.BICUBIC)
        channels.append(np.asarray(resized, dtype=np.float32))
    return np.clip(np.stack(channels, axis=2), 0.0, 255.0)


def scaled_batch(images: list[np.ndarray], size: int, offset: float, scale: float) -> torch.Tensor:
    """N×3×size×size float32 tensor of ``(clean_resize(x) - offset) / scale``."""
    stacked = np.stack([clean_resize(image, size) for image in images])
    return torch.from_numpy((stacked - offset) / scale).permute(0, 3, 1, 2).contiguous()


class Backbone(ABC):
    """A network that turns uint8 RGB images into feature vectors (and maybe class logits).

    A backbone class is registered with ``@aigc_eval.features.backbones.register(name)`` and built
    as ``cls(path, device)``: ``path`` overrides its weights (None: its default ones).
    """

    name: str
    feature_dim: int
    # Whether ``embed`` also gives class logits (what the Inception Score needs).
    has_logits: ClassVar[bool] = False
    weights_sha256: str
    resize: str  # short resize description for signatures, e.g. "pil-bicubic-299"
    preprocessing: str  # everything about the input pipeline that changes features (cache key)
    batch_size: int

    def __init__(self, device: str | torch.device = "auto") -> None:
        self.device = resolve_device(str(device))
        self._loaded = False

    @abstractmethod
    def _load(self) -> None:
        """Build the network on ``self.device`` (called once, on first use)."""

    @abstractmethod
    def _forward(self, images: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features (N×feature_dim) and logits (or None) for one batch of uint8 RGB images."""

    @property
    def identity(self) -> str:
        """What the features depend on: network, exact weights, preprocessing."""
        return f"{self.name}|weights:{self.weights_sha256}|{self.preprocessing}"

    @property
    def origin(self) -> str:
        """The signature part that says which features a score was computed on."""
        return f"backbone:{self.name}|weights:{self.weights_sha256[:12]}|resize:{self.resize}"

    def load(self) -> None:
        """Build the network now rather than on the first batch (no-op once loaded)."""
        if not self._loaded:
            self._load()
            self._loaded = True

    def embed(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """float64 features and logits for one batch.

        A short batch is padded to ``batch_size`` with copies of its first image (their rows are
        dropped): the network always runs one input shape, so an image's features do not depend on
        the batch it came in (a set's last batch, a shard's, one with skipped files) nor on the
        thread count (CPU kernels pick their blocking by shape and threads: a batch of 4 through
        Inception gave 3e-6 different features with 1 and 2 threads; full batches were identical).
        """
        self.load()
        count = len(images)
        padded = images + images[:1] * (self.batch_size - count)
        with torch.inference_mode():
            features, logits = self._forward(padded)
        if features.shape != (len(padded), self.feature_dim):
            raise UserError(
                f"backbone {self.name}: the network returned features of shape {tuple(features.shape)}, "
                f"expected ({len(padded)}, {self.feature_dim}); check the weights file you passed"
            )
        as_numpy = features[:count].double().cpu().numpy()
        return as_numpy, None if logits is None else logits[:count].double().cpu().numpy()
