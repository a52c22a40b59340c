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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from aigc_eval.errors import UserError
from aigc_eval.features.base import Backbone, sha256_files

_MODEL_TYPES = {"clip": ("clip",), "dinov2": ("dinov2",)}
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: unreadable ({error})") from None


class HFVision(Backbone):
    """A CLIP or DINOv2 vision tower loaded from a local folder."""

    def __init__(self, kind: str, path: str | Path | None, device: str | torch.device = "auto") -> None:
        super().__init__(device)
        self.name = kind
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
        if model_type not in _MODEL_TYPES[kind]:
            raise UserError(
                f"{self.path}: model_type {model_type!r} is not a {kind} checkpoint "
                f"(expected {' or '.join(_MODEL_TYPES[kind])})"
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
        self.feature_dim = int(config["projection_dim"] if kind == "clip" else config["hidden_size"])
        self.has_logits = False
        processor_hash = hashlib.sha256(json.dumps(processor, sort_keys=True).encode()).hexdigest()
        self.resize = f"hf-processor-{_target_size(processor)}"
        pooling = "image_embeds-l2" if kind == "clip" else "cls-layernorm"
        self.preprocessing = f"hf-processor:{processor_hash[:16]}|features:{pooling}"
        self.batch_size = 64 if self.device.type == "cuda" else 16

    def _load(self) -> None:
        from transformers import AutoImageProcessor, CLIPModel, Dinov2Model

        model_class = CLIPModel if self.name == "clip" else Dinov2Model
        self._processor = AutoImageProcessor.from_pretrained(self.path)
        self._model = model_class.from_pretrained(self.path, dtype=torch.float32).eval().to(self.device)

    def _forward(self, images: list[np.ndarray]) -> tuple[torch.Tensor, None]:
        pil_images = [Image.fromarray(image) for image in images]
        pixels = self._processor(images=pil_images, return_tensors="pt")["pixel_values"].to(self.device)
        if self.name == "clip":
            output = self._model.get_image_features(pixel_values=pixels)
            embeds = output if isinstance(output, torch.Tensor) else output.pooler_output
            return torch.nn.functional.normalize(embeds, dim=-1), None
        return self._model(pixel_values=pixels).pooler_output, None


def _target_size(processor: dict[str, Any]) -> str:
    """The network input size the processor produces, for the signature (e.g. ``224`` or ``crop224``)."""
    crop = processor.get("crop_size") if processor.get("do_center_crop") else None
    size = crop or processor.get("size") or {}
    if isinstance(size, dict):
        values = [size.get(k) for k in ("height", "width", "shortest_edge") if size.get(k)]
        size = "x".join(str(v) for v in dict.fromkeys(values))
    return f"crop{size}" if crop else str(size)
