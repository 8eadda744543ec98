"""Named registries of extensions: ids and aliases, collisions, and lookups that suggest."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Iterator

from .errors import PluginError, UnknownNameError


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    plugin: str  # which plugin registered it
    aliases: tuple[str, ...] = ()


class Registry:
    """Maps names (and aliases) of one kind of extension to the objects plugins registered."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    def register(self, obj: Any, *, name: str | None = None, aliases: tuple[str, ...] = (),
                 plugin: str = "?") -> None:
        name = name or getattr(obj, "name", None)
        if not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.kind} without a name; give the class a `name`")
        for key in (name, *aliases):
            owner = self._owner(key)
            if owner is not None:
                raise PluginError(f"{self.kind} {key!r} from plugin {plugin!r} collides with the one from plugin "
                                  f"{owner.plugin!r}; rename one of them or disable a plugin (JERC_EVAL_PLUGINS)")
        self._entries[name] = Entry(name, obj, plugin, tuple(aliases))
        self._aliases.update({a: name for a in aliases})

    def _owner(self, key: str) -> Entry | None:
        if key in self._entries:
            return self._entries[key]
        return self._entries.get(self._aliases.get(key, ""))

    def entry(self, name: str) -> Entry:
        found = self._owner(name)
        if found is None:
            raise UnknownNameError(unknown_message(self.kind, name, self.names()))
        return found

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return self._owner(name) is not None

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)


def unknown_message(kind: str, name: str, available: list[str]) -> str:
    """``Unknown encoder 'maee'. Did you mean: mae? Available: ...`` (one line)."""
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    shown = ", ".join(available) if available else "(none registered)"
    return f"unknown {kind} {name!r}.{hint} Available: {shown}"
