"""Output writers: the files made from a finished run record (table.md, table.csv, report.html...).

The pipeline's finalize calls ``write_outputs(folder, record, comparison)`` and imports nothing
else of the presentation layer: this module holds only the registry, whose built-ins name the
modules in ``aigc_eval.report`` that register them, imported when first looked up. A third-party
package adds an output through an entry point in the ``aigc_eval.writers`` group (a module that
registers a ``Writer`` class with ``@writers.register("name")``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from aigc_eval.registry import Registry

if TYPE_CHECKING:
    from aigc_eval.record import RunRecord
    from aigc_eval.run_folder import RunFolder


class Writer(Protocol):
    """One output file of a run. ``comparison`` is an ``aigc_eval.gate.Comparison`` (the run's rows
    against its baseline row, read by attribute) or None; a writer writes only through
    ``folder.write_output(name, text)`` and returns the path it wrote."""

    name: ClassVar[str]

    def write(self, folder: RunFolder, record: RunRecord, comparison: Any | None) -> Path: ...


writers: Registry[type[Writer]] = Registry(
    "output writer",
    "aigc_eval.writers",
    builtins={
        "table.md": "aigc_eval.report.tables",
        "table.csv": "aigc_eval.report.tables",
        "report.html": "aigc_eval.report.html",
    },
)


def write_outputs(
    folder: RunFolder, record: RunRecord, comparison: Any | None = None, names: list[str] | None = None
) -> list[Path]:
    """Run each writer in ``names`` (default: every registered one) once; the paths written, in order."""
    chosen = writers.names() if names is None else names
    return [writers.get(name, where="outputs")().write(folder, record, comparison) for name in chosen]
