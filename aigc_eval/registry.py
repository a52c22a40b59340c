"""Plug-in registries: metrics, backends, image backbones and output writers by name.

Each kind has one ``Registry``. A plug-in registers itself with a decorator when its module is
imported::

    @metrics.register("my_metric")
    class MyMetric(Metric): ...

Built-in plug-ins are listed by module so they are imported only when looked up (a backend module
may import torch). Third-party packages add plug-ins without touching this repository through a
Python entry point in the registry's group (e.g. ``aigc_eval.metrics``): the entry point names a
module (or an object in it) that registers when loaded. Entry points are loaded on the first lookup
of a name not built in, and by ``names()``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Generic, TypeVar

from aigc_eval.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to plug-ins of one kind, filled by ``register`` decorators and entry points."""

    def __init__(self, kind: str, group: str, builtins: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.group = group
        self._builtins = dict(builtins or {})  # name -> module that registers it
        self._entries: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make ``name`` refer to the decorated object (re-registering replaces it)."""

        def add(plugin: T) -> T:
            self._entries[name] = plugin
            return plugin

        return add

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests that register a toy plug-in clean up with it)."""
        self._entries.pop(name, None)

    def get(self, name: str, where: str = "") -> T:
        """The plug-in called ``name``; a user error listing the known names when there is none."""
        if name not in self._entries and name in self._builtins:
            importlib.import_module(self._builtins[name])
        if name not in self._entries:
            self._load_entry_points()
        if name not in self._entries:
            prefix = f"{where}: " if where else ""
            raise UserError(
                f"{prefix}unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}"
            )
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def names(self) -> list[str]:
        """Every name: built in, registered, and from installed entry points."""
        self._load_entry_points()
        return sorted({*self._builtins, *self._entries})

    def load_all(self) -> dict[str, T]:
        """Every plug-in, imported (for listings that need each one's attributes)."""
        return {name: self.get(name) for name in self.names()}

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for entry_point in _entry_points(self.group):
            try:
                entry_point.load()
            except Exception as error:  # a broken third-party plug-in must name itself
                raise UserError(
                    f"the {self.kind} plug-in {entry_point.name!r} ({entry_point.value}, entry point group "
                    f"{self.group!r}) failed to load: {error}; fix or uninstall the package providing it"
                ) from error

    def reload_entry_points(self) -> None:
        """Look at installed entry points again (after installing a plug-in package at run time)."""
        self._entry_points_loaded = False
        self._load_entry_points()


def _entry_points(group: str) -> Iterable[metadata.EntryPoint]:
    return metadata.entry_points(group=group)
