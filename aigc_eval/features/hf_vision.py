"""``clip`` and ``dinov2``: image features from a local transformers checkpoint folder.

* ``clip``: CLIP image embeddings (``get_image_features``: pooled vision output
  through the visual projection), L2-normalised as in the CMMD reference code;
  used for CMMD and FD_CLIP.
* ``dinov2``: the DINOv2 CLS token after the final layer norm (``pooler_output``),
  the representation behind FD_DINOv2 (Stein et al. 2023).

Preprocessing is the checkpoint's own image processor config (resize, crop,
normalisation); its JSON is hashed into the cache key, and the signature's
resize field gives the processor's target size. Nothing is downloaded: the path
must be a folder with ``config.json``, weights and ``preprocessor_config.json``.
"""

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from aigc_eval.errors import UserError
from aigc_eval.features import backbones
from aigc_eval.features.base import Backbone
from aigc_eval.files import sha256_files

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: unreadable ({error})") from None


class HFVision(Backbone):
    """A vision tower loaded from a local transformers folder (subclasses: which model type)."""

    pooling: ClassVar[str]  # which output the features are (for the cache key)

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "auto") -> None:
        super().__init__(device)
        kind = self.name
        if path is None:
            raise UserError(
                f"backbone {kind}: needs a local transformers checkpoint folder; pass --backbone-path DIR"
            )
        self.path = Path(path)
        config_file = self.path / "config.json"
        if not config_file.is_file():
            raise UserError(f"{self.path}: not a transformers checkpoint folder (no config.json)")
        config = _read_json(config_file)
        model_type = config.get("model_type")
        if model_type != kind:
            raise UserError(
                f"{self.path}: model_type {model_type!r} is not a {kind} checkpoint (expected {kind})"
            )
        processor_file = self.path / "preprocessor_config.json"
        if not processor_file.is_file():
            raise UserError(
                f"{self.path}: no preprocessor_config.json; save the image processor with the model"
            )
        processor = _read_json(processor_file)
        weights = sorted({p for pattern in _WEIGHT_PATTERNS for p in self.path.glob(pattern)})
        if not weights:
            raise UserError(f"{self.path}: no weights (*.safetensors or *.bin)")
        self.weights_sha256 = sha256_files(weights)
        self.feature_dim = self._feature_dim(config)
        processor_hash = hashlib.sha256(json.dumps(processor, sort_keys=True).encode()).hexdigest()
        self.resize = f"hf-processor-{_target_size(processor)}"
        self.preprocessing = f"hf-processor:{processor_hash[:16]}|features:{self.pooling}"
        self.batch_size = 64 if self.device.type == "cuda" else 16

    @abstractmethod
    def _feature_dim(self, config: dict[str, Any]) -> int: ...

    @abstractmethod
    def _model_class(self) -> Any: ...

    def _load(self) -> None:
        from transformers import AutoImageProcessor

        self._processor = AutoImageProcessor.from_pretrained(self.path)
        model = self._model_class().from_pretrained(self.path, dtype=torch.float32)
        self._model = model.eval().to(self.device)

    def _pixels(self, images: list[np.ndarray]) -> torch.Tensor:
        pil_images = [Image.fromarray(image) for image in images]
        return self._processor(images=pil_images, return_tensors="pt")["pixel_values"].to(self.device)


@backbones.register("clip")
class CLIPVision(HFVision):
    """CLIP image embeddings, L2-normalised (CMMD, FD_CLIP)."""

    name = "clip"
    pooling = "image_embeds-l2"

    def _feature_dim(self, config: dict[str, Any]) -> int:
        return int(config["projection_dim"])

    def _model_class(self) -> Any:
        from transformers import CLIPModel

        return CLIPModel

    def _forward(self, images: list[np.ndarray]) -> tuple[torch.Tensor, None]:
        output = self._model.get_image_features(pixel_values=self._pixels(images))
        embeds = output if isinstance(output, torch.Tensor) else output.pooler_output
        return torch.nn.functional.normalize(embeds, dim=-1), None


@backbones.register("dinov2")
class DINOv2Vision(HFVision):
    """The DINOv2 CLS token after the final layer norm (FD_DINOv2)."""

    name = "dinov2"
    pooling = "cls-layernorm"

    def _feature_dim(self, config: dict[str, Any]) -> int:
        return int(config["hidden_size"])

    def _model_class(self) -> Any:
        from transformers import Dinov2Model

        return Dinov2Model

    def _forward(self, images: list[np.ndarray]) -> tuple[torch.Tensor, None]:
        return self._model(pixel_values=self._pixels(images)).pooler_output, None


def _target_size(processor: dict[str, Any]) -> str:
    """The network input size the processor produces, for the signature (e.g. ``224`` or ``crop224``)."""
    crop = processor.get("crop_size") if processor.get("do_center_crop") else None
    size = crop or processor.get("size") or {}
    if isinstance(size, dict):
        values = [size.get(k) for k in ("height", "width", "shortest_edge") if size.get(k)]
        size = "x".join(str(v) for v in dict.fromkeys(values))
    return f"crop{size}" if crop else str(size)
