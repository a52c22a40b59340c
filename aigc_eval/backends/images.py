"""The ``images`` backend: an image generator evaluated from the folders of images it wrote.

It loads nothing and generates nothing: its rows take part in image tasks only (their ``images``
name a folder per task), and its provenance is those folders.
"""

from __future__ import annotations

from typing import Any, Literal

from aigc_eval.backends import backends
from aigc_eval.backends.base import Backend, Capabilities
from aigc_eval.config import Device, ModelRow
from aigc_eval.record import Provenance

# What the single-backend schema dumped for every image row besides name, backend, images and
# device: the hf defaults, meaningless here. ``config_hash`` still hashes them so suites hash as
# they did, and run folders (named by the hash) and ``--resume`` checks stay valid. Frozen: this is
# a record of the old dump, not of today's hf defaults.
_SCHEMA1_FIELDS: dict[str, Any] = {
    "path": None,
    "revision": None,
    "dtype": "auto",
    "batch_size": 8,
    "trust_remote_code": False,
    "chat": False,
    "system": None,
    "fused_activations": True,
    "generation": {
        "max_new_tokens": 64,
        "num_beams": 1,
        "do_sample": False,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 50,
        "repetition_penalty": 1.0,
        "early_stopping": False,
        "seed": 0,
        "stop": [],
    },
}


class ImagesRow(ModelRow):
    """An ``images`` row: ``images`` maps each image task to the generated images (a folder, a
    list file or .npz statistics); ``device`` runs the feature backbone."""

    backend: Literal["images"]
    device: Device = "auto"

    def hash_form(self) -> dict[str, Any]:
        return {**_SCHEMA1_FIELDS, **self.model_dump(mode="json")}


@backends.register("images")
class ImagesBackend(Backend):
    """Nothing to load: the image tasks read the row's folders."""

    Options = ImagesRow
    capabilities = Capabilities()

    def __init__(self, row: ModelRow) -> None:
        self.row = row

    def describe(self) -> Provenance:
        return Provenance(backend="images", images=dict(self.row.images))
