"""Name -> class registries (encoders aside): the decorator factory fusions and strategies share."""

from __future__ import annotations

from typing import Callable, Dict


def registrar(table: Dict[str, type], attribute: str, kind: str) -> Callable[[str], Callable[[type], type]]:
    """Return ``register(name)``, a class decorator storing the class in ``table[name]``
    and the name on the class as ``attribute``."""

    def register(name: str) -> Callable[[type], type]:
        def deco(cls: type) -> type:
            table[name] = cls
            setattr(cls, attribute, name)
            return cls

        return deco

    register.__doc__ = f"Decorator registering a {kind} class under ``name``."
    return register
