"""The one name -> object table every registry of the package uses (strategies, fusions, encoders).

A leaf module: it imports nothing from ``arl_hf``, so any module may use it without an import
cycle. Registering a name twice replaces the entry and logs a warning naming the kind and the
name (:class:`RegistryOverwriteWarning`; a user module shadowing a built-in is allowed, but
never silent).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Iterator, Optional, TypeVar

T = TypeVar("T")


class RegistryOverwriteWarning(UserWarning):
    """A name was registered again, replacing the earlier entry."""


class Registry(Dict[str, Any]):
    """A ``dict`` from names to objects (classes or builder functions) of one ``kind``.

    Lookups are plain ``dict`` operations (``name in registry``, ``registry[name]``,
    ``sorted(registry)``). Entries are added with :meth:`register` (a decorator) or by item
    assignment; either way an existing name is replaced with a warning.

    Args:
        kind: what the entries are, for messages (``"strategy"``, ``"fusion"``, ...).
        attribute: when set, :meth:`register` also stores the name on the object under this
            attribute (``cls.name = "arl"``).
    """

    def __init__(self, kind: str, attribute: Optional[str] = None):
        super().__init__()
        self.kind = kind
        self.attribute = attribute

    def __setitem__(self, name: str, obj: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind}: expected a non-empty string name, got {name!r}")
        if name in self and self[name] is not obj:
            old = dict.__getitem__(self, name)
            warnings.warn(f"{self.kind} {name!r} is registered again: {obj!r} replaces {old!r}",
                          RegistryOverwriteWarning, stacklevel=3)
        super().__setitem__(name, obj)

    def register(self, name: str, **attributes: Any) -> Callable[[T], T]:
        """Decorator storing the decorated object under ``name``; ``attributes`` are set on it
        (e.g. ``options=MyOptions``), as is the name when the registry has an ``attribute``."""

        def deco(obj: T) -> T:
            if self.attribute is not None:
                setattr(obj, self.attribute, name)
            for key, value in attributes.items():
                setattr(obj, key, value)
            self[name] = obj
            return obj

        return deco

    def get_or_raise(self, name: str, field: str) -> Any:
        """``self[name]``, or a ``ValueError`` naming ``field`` and the registered names."""
        if name not in self:
            raise ValueError(f"{field}: unknown {self.kind} {name!r}; expected one of {sorted(self)}")
        return self[name]

    def names(self) -> Iterator[str]:
        """The registered names, in registration order."""
        return iter(list(self))
