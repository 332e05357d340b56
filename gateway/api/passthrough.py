"""Whether an alias can take an API as it is (every route serves it), and an alias narrowed to one provider
(the one that stores a response a request continues)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from gateway.config.snapshot import Alias, Snapshot
from gateway.errors import InvalidRequest


def _chain(snapshot: Snapshot, alias: Alias) -> Iterator[Alias]:
    """The alias and every alias its fallbacks can reach, each once."""
    seen: set[str] = set()
    queue = [alias]
    while queue:
        current = queue.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        yield current
        names = (*current.fallbacks, *current.context_window_fallbacks, *current.content_policy_fallbacks)
        queue.extend(snapshot.aliases[name] for name in names)


def serves_responses(snapshot: Snapshot, model: Any) -> bool:
    """True when `model` names an alias whose every route, fallbacks included, serves the Responses API."""
    alias = snapshot.aliases.get(model) if isinstance(model, str) else None
    if alias is None:
        return False
    return all(route.adapter.speaks_responses for a in _chain(snapshot, alias) for route in a.routes)


def pinned(snapshot: Snapshot, alias: Alias, provider: str) -> Alias:
    """The alias with only the routes (its own and its fallbacks') that go to `provider`, and no fallbacks."""
    routes = tuple(r for a in _chain(snapshot, alias) for r in a.routes if r.provider == provider)
    if not routes:
        raise InvalidRequest(
            f"the previous response was not made by a provider of the model '{alias.name}'",
            param="previous_response_id",
        )
    return dataclasses.replace(
        alias, routes=routes, fallbacks=(), context_window_fallbacks=(), content_policy_fallbacks=()
    )
