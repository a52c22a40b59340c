"""Score names of image metrics, known without torch or features (tables, compare, config)."""

from __future__ import annotations

# Metrics named after the Inception network: on another backbone they are labelled with it.
_BACKBONE_LABELS = {"fid": "fd", "kid": "kd", "is": "is", "fid_inf": "fd_inf"}
INCEPTION = "inception-v3-tf"


class SampleSizeWarning(UserWarning):
    """Fewer images than feature dimensions: the covariance is rank-deficient and FID biased upward."""


def metric_label(metric: str, backbone: str) -> str:
    """Headline name: FID/KID/IS only for the Inception network; other backbones are named in the label."""
    if metric in _BACKBONE_LABELS and backbone != INCEPTION:
        return f"{_BACKBONE_LABELS[metric]}_{backbone}"
    return metric
