"""Which routes a request tries, in order: a weighted pick in its alias, then one per fallback alias.

Fallback aliases are walked breadth-first with a visited set, so a chain never loops.
"""

from __future__ import annotations

import random
from bisect import bisect_right

from gateway.config.snapshot import Alias, Route, Snapshot


def pick(alias: Alias, rng: random.Random) -> Route:
    """One route, chosen with probability proportional to its weight."""
    routes = alias.routes
    if len(routes) == 1:
        return routes[0]
    point = rng.random() * alias.cumulative_weights[-1]
    return routes[min(bisect_right(alias.cumulative_weights, point), len(routes) - 1)]


def attempt_plan(snapshot: Snapshot, alias: Alias, rng: random.Random) -> list[Route]:
    """The alias's pick first, then one pick from each fallback alias (and theirs), each alias at most once."""
    plan = [pick(alias, rng)]
    if not alias.fallbacks:
        return plan
    seen = {alias.name}
    queue = list(alias.fallbacks)
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        fallback = snapshot.aliases[name]
        plan.append(pick(fallback, rng))
        queue.extend(fallback.fallbacks)
    return plan
