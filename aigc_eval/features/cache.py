"""On-disk feature cache: one ``.npz`` per (image set content, backbone identity).

The key hashes the ordered sha256 of every image's bytes together with the
backbone's identity (name, weights sha256, preprocessing id), so renaming or
moving a folder still hits, and changing one image, the weights or the resize
misses. Entries are written via a temp file and a rename (a kill never leaves a
half-written entry). Features are stored as float32, the networks' own output
precision, so the round trip is exact.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aigc_eval.files import write_npz_atomic

# 2: short batches are padded to the batch size (``Backbone.embed``), which changes their last bits.
CACHE_VERSION = "aigc-eval-features-2"
ENV_VAR = "AIGC_EVAL_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$AIGC_EVAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/aigc-eval/features`` (``~/.cache`` by default)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "aigc-eval" / "features"


@dataclass(frozen=True)
class CachedFeatures:
    """A set's features (for the images that decoded) and the content hashes of those skipped."""

    features: np.ndarray
    logits: np.ndarray | None
    skipped_hashes: tuple[str, ...]


class FeatureCache:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, identity: str, hashes: tuple[str, ...]) -> Path:
        digest = hashlib.sha256("\n".join((CACHE_VERSION, identity, *hashes)).encode()).hexdigest()
        backbone = identity.split("|", 1)[0]
        return self.root / backbone / f"{digest}.npz"

    def load(self, identity: str, hashes: tuple[str, ...]) -> CachedFeatures | None:
        """The entry for exactly these images and this backbone, or None (also for an unreadable entry)."""
        path = self.path(identity, hashes)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["identity"]) != identity:
                    return None
                logits = data["logits"].astype(np.float64) if "logits" in data.files else None
                skipped = tuple(str(h) for h in data["skipped"])
                return CachedFeatures(data["features"].astype(np.float64), logits, skipped)
        except (OSError, ValueError, KeyError, EOFError):
            return None  # a damaged entry is recomputed and overwritten

    def store(
        self,
        identity: str,
        hashes: tuple[str, ...],
        features: np.ndarray,
        logits: np.ndarray | None,
        skipped_hashes: tuple[str, ...],
    ) -> Path:
        path = self.path(identity, hashes)
        arrays = {
            "identity": np.array(identity),
            "features": features.astype(np.float32),
            "skipped": np.array(skipped_hashes, dtype="U64"),
        }
        if logits is not None:
            arrays["logits"] = logits.astype(np.float32)
        write_npz_atomic(path, arrays)
        return path
