"""A registry: named entries (model families, metrics) that the CLI, flows and lifecycle look up."""

from __future__ import annotations

from typing import Generic, TypeVar

from facegan.errors import ConfigError

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """Entries by their `name`; an unknown name is a ConfigError that lists the known ones."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind  # what an entry is, for errors ("family", "metric")

    def register(self, entry: T) -> T:
        """Add `entry` under its name (replacing one of the same name); returns it."""
        self[entry.name] = entry
        return entry

    def find(self, name: str) -> T:
        """The entry called `name`."""
        if name not in self:
            raise ConfigError(f"{self.kind} {name!r} is unknown; choose one of {', '.join(self)}")
        return self[name]
