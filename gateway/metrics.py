"""Prometheus metrics for `/metrics`: requests, upstream errors, latency and TTFB histograms, route health.

Counters live in this process (each worker of `--workers N` reports its own; scrape each, or run one
worker per container). Recording is a few dict updates per request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable

from gateway.routing.health import Health, HealthStore
from gateway.routing.stats import RouteStats

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
STATES = (Health.HEALTHY, Health.HALF_OPEN, Health.COOLING)


class Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: str) -> Iterable[str]:
        running = 0
        for bound, count in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            yield f'{name}_bucket{{{labels},le="{le}"}} {running}'
        yield f"{name}_sum{{{labels}}} {self.sum:.6f}"
        yield f"{name}_count{{{labels}}} {running}"


def _label(value: str | None) -> str:
    text = value or ""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self, health: HealthStore, stats: RouteStats) -> None:
        self.health = health
        self.stats = stats
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.upstream_errors: Counter[tuple[str, str]] = Counter()
        self.latency: dict[str, Histogram] = {}
        self.ttfb: dict[str, Histogram] = {}
        self.tokens: Counter[tuple[str, str]] = Counter()
        self.cost: dict[tuple[str, str], float] = {}
        self.sections: list[Callable[[], list[str]]] = []
        """More lines for /metrics from other parts of the process (the usage writer, the limits)."""

    def request(self, alias: str, route: str | None, status: int, latency: float, ttfb: float | None) -> None:
        self.requests[(alias, route or "", str(status))] += 1
        hist = self.latency.get(alias) or self.latency.setdefault(alias, Histogram())
        hist.observe(latency)
        if ttfb is not None:
            (self.ttfb.get(alias) or self.ttfb.setdefault(alias, Histogram())).observe(ttfb)

    def usage(self, alias: str, counts: Iterable[tuple[str, int]], cost: float, currency: str) -> None:
        """Tokens by kind (prompt, cached, completion, reasoning) and the cost of one request."""
        for kind, n in counts:
            if n:
                self.tokens[(alias, kind)] += n
        if cost:
            self.cost[(alias, currency)] = self.cost.get((alias, currency), 0.0) + cost

    def upstream_error(self, route: str, code: str | None) -> None:
        self.upstream_errors[(route, code or "")] += 1

    def render(self, routes: Iterable[str]) -> str:
        out = header("switchyard_requests_total", "counter", "Requests served on the data plane.")
        for (alias, route, status), n in sorted(self.requests.items()):
            out.append(series("switchyard_requests_total", n, alias=alias, route=route, status=status))
        out += header("switchyard_upstream_errors_total", "counter", "Failed upstream attempts.")
        for (route, code), n in sorted(self.upstream_errors.items()):
            out.append(series("switchyard_upstream_errors_total", n, route=route, code=code))
        for name, what, hists in (
            ("switchyard_request_duration_seconds", "Request latency.", self.latency),
            ("switchyard_time_to_first_byte_seconds", "Time to the first byte (first token) sent.", self.ttfb),
        ):
            out += header(name, "histogram", what)
            for alias, hist in sorted(hists.items()):
                out.extend(hist.lines(name, f'alias="{_label(alias)}"'))
        out += header("switchyard_tokens_total", "counter", "Tokens metered, by kind.")
        for (alias, kind), n in sorted(self.tokens.items()):
            out.append(series("switchyard_tokens_total", n, alias=alias, kind=kind))
        out += header("switchyard_cost_total", "counter", "Cost metered, in each currency.")
        for (alias, currency), amount in sorted(self.cost.items()):
            out.append(series("switchyard_cost_total", round(amount, 10), alias=alias, currency=currency))
        out += self._route_lines(sorted(set(routes)))
        for section in self.sections:
            out += section()
        return "\n".join(out) + "\n"

    def _route_lines(self, routes: list[str]) -> list[str]:
        out = header("switchyard_route_state", "gauge", "1 for the route's current circuit-breaker state.")
        for route in routes:
            current = self.health.health(route)
            for state in STATES:
                out.append(series("switchyard_route_state", int(state is current), route=route, state=state.value))
        out += header("switchyard_route_inflight", "gauge", "Requests in flight per route.")
        out += [series("switchyard_route_inflight", self.stats.inflight(r), route=r) for r in routes]
        out += header("switchyard_route_ttfb_seconds", "gauge", "Smoothed time to first byte per route.")
        out += [series("switchyard_route_ttfb_seconds", round(self.stats.ttfb(r), 6), route=r) for r in routes]
        return out


def header(name: str, kind: str, text: str) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def series(name: str, value: float, **labels: str) -> str:
    if not labels:
        return f"{name} {value}"
    inner = ",".join(f'{key}="{_label(val)}"' for key, val in labels.items())
    return f"{name}{{{inner}}} {value}"
