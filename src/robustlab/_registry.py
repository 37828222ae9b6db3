"""A small name -> factory registry used for models, objectives, probes and datasets."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from robustlab._checks import check_choice

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Maps names to objects; unknown names raise an error listing the valid ones.

    Parameters
    ----------
    kind : str
        What is registered ("model", "method", "probe", ...); used as the parameter name in errors.
    builtin_modules : callable returning module names, optional
        Modules that register built-in entries, imported on the first read (lookup, listing,
        membership) rather than at import time, so importing robustlab does no work. A callable,
        so a module list extended later is still honoured.
    """

    def __init__(self, kind: str, *, builtin_modules: Callable[[], Iterable[str]] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._builtin_modules = builtin_modules
        self._loaded = builtin_modules is None

    def _load_builtins(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # set first: the modules register themselves through this registry
        for module in self._builtin_modules():  # type: ignore[misc]
            importlib.import_module(module)

    def register(self, name: str, obj: T | None = None, *, replace: bool = False) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def _add(item: T) -> T:
            if name in self._items and not replace and self._items[name] is not item:
                raise ValueError(f"A {self.kind} named {name!r} is already registered.")
            self._items[name] = item
            return item

        return _add if obj is None else _add(obj)

    def get(self, name: str) -> T:
        self._load_builtins()
        check_choice(self.kind, name, self._items)
        return self._items[name]

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._load_builtins()
        return iter(sorted(self._items))

    def __len__(self) -> int:
        self._load_builtins()
        return len(self._items)
