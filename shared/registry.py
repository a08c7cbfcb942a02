"""A small name -> object registry, so variants are picked by name instead of ``if name == ...`` chains.

Generic and import-light (no torch): reward functions, environments and the like reuse it.

>>> GREETINGS = Registry("greeting")
>>> @GREETINGS.register("hello")
... def hello(who: str) -> str:
...     return f"hello {who}"
>>> GREETINGS.get("hello")("lab")
'hello lab'
>>> GREETINGS.names()
['hello']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")

_MISSING = object()


class UnknownNameError(KeyError, ValueError):
    """A name that is not in a registry. Both a ``KeyError`` and a ``ValueError``, so either catch works."""

    def __str__(self) -> str:  # KeyError would print the message inside quotes
        return str(self.args[0]) if self.args else ""


class Registry(Mapping[str, T], Generic[T]):
    """Names mapped to objects (usually functions), filled with the :meth:`register` decorator.

    A read-only ``Mapping``: ``reg[name]``, ``name in reg``, ``list(reg)`` and ``reg.items()`` work as
    on a dict. Unlike ``dict.get``, :meth:`get` raises :class:`UnknownNameError` (listing the valid
    names) for an unknown name unless a default is passed.

    Args:
        name: what the entries are, e.g. ``"policy loss"``; used in error messages.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that stores the decorated object under ``name`` and returns it unchanged.

        Raises ``ValueError`` if ``name`` is already taken (two variants silently sharing a name is a bug).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.name} names must be non-empty strings, got {name!r}")

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.name} {name!r} is already registered ({self._entries[name]!r})")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str, default: object = _MISSING) -> T:  # type: ignore[override]
        """The entry called ``name``; ``default`` if given and the name is unknown, else an error."""
        if name in self._entries:
            return self._entries[name]
        if default is not _MISSING:
            return default  # type: ignore[return-value]
        raise UnknownNameError(f"unknown {self.name} {name!r}; valid names: {', '.join(self.names())}")

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, names={self.names()})"
