"""Session registry: who is logged in, one live session per character.

``SessionRegistry`` is the scale-out seam (a Redis-backed registry would track sessions across nodes);
``LocalSessionRegistry`` keeps them in this process. Lifecycle decisions (replace, grace expiry) are made by
``gameserver.sessions``; the registry only indexes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from .session import Session


class SessionRegistry(Protocol):
    def add(self, session: Session) -> None: ...
    def remove(self, session: Session) -> None: ...
    def get(self, session_id: str) -> Session | None: ...
    def by_name(self, name: str) -> Session | None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Session]: ...


class LocalSessionRegistry:
    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}
        self._by_name: dict[str, Session] = {}

    def add(self, session: Session) -> None:
        """Register ``session``; the caller has already replaced any older session of the character."""
        self._by_id[session.id] = session
        self._by_name[session.name] = session

    def remove(self, session: Session) -> None:
        if self._by_id.get(session.id) is session:
            del self._by_id[session.id]
        if self._by_name.get(session.name) is session:
            del self._by_name[session.name]

    def get(self, session_id: str) -> Session | None:
        return self._by_id.get(session_id)

    def by_name(self, name: str) -> Session | None:
        return self._by_name.get(name)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._by_id.values()))
