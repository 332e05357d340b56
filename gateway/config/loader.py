"""Reads a YAML config file: `${ENV}` interpolation, schema validation and cross-reference checks.

Every problem is collected with the dotted path of the bad key, so `check-config` can print them all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.config.model import GatewayConfig, ModelConfig

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


class ConfigError(Exception):
    """A config that cannot be used; `problems` holds (path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" if path else msg for path, msg in problems))

    def lines(self) -> list[str]:
        return [f"{path}: {msg}" if path else msg for path, msg in self.problems]


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last silently).

    Keys merged in with `<<: *anchor` may be overridden, as YAML intends; only a mapping's own keys count.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain scalar", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def format_path(parts: Iterable[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def interpolate(
    value: Any, env: Mapping[str, str], path: tuple[str | int, ...] = ()
) -> tuple[Any, list[tuple[str, str]]]:
    """Replace `${NAME}` / `${NAME:-default}` in every string; unset names without a default are errors."""
    problems: list[tuple[str, str]] = []

    def walk(node: Any, at: tuple[str | int, ...]) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, (*at, str(k))) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, (*at, i)) for i, v in enumerate(node)]
        if isinstance(node, str):
            return _ENV_REF.sub(lambda m: substitute(m, at), node)
        return node

    def substitute(match: re.Match[str], at: tuple[str | int, ...]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append((format_path(at), f"environment variable {name} is not set and has no default"))
        return ""

    return walk(value, path), problems


def pydantic_problems(err: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for item in err.errors(include_url=False, include_input=False):
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        msg = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        problems.append((format_path(loc), msg))
    return problems


def cross_check(
    cfg: GatewayConfig, provider_types: Iterable[str], needs_base_url: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """Checks the schema cannot express: references between sections, duplicates."""
    return [
        *_check_providers(cfg, set(provider_types), set(needs_base_url)),
        *_check_models(cfg),
        *_check_keys(cfg),
    ]


def _check_providers(cfg: GatewayConfig, types: set[str], needs_base_url: set[str]) -> Iterator[tuple[str, str]]:
    for name, provider in cfg.providers.items():
        if provider.type not in types:
            yield f"providers.{name}.type", f"unknown provider type {provider.type!r}; known: {sorted(types)}"
        elif provider.type in needs_base_url and not provider.base_url:
            yield f"providers.{name}.base_url", f"required for type {provider.type!r} (your resource's URL)"


def _check_models(cfg: GatewayConfig) -> Iterator[tuple[str, str]]:
    for alias, model in cfg.models.items():
        for i, route in enumerate(model.routes):
            if route.provider not in cfg.providers:
                yield f"models.{alias}.routes[{i}].provider", f"no provider named {route.provider!r}"
        for field in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
            for i, fallback in enumerate(getattr(model, field)):
                if fallback not in cfg.models:
                    yield f"models.{alias}.{field}[{i}]", f"no model alias named {fallback!r}"
                elif fallback == alias:
                    yield f"models.{alias}.{field}[{i}]", "an alias cannot fall back to itself"
        yield from _check_retrieval(cfg, alias, model)


def _check_retrieval(cfg: GatewayConfig, alias: str, model: ModelConfig) -> Iterator[tuple[str, str]]:
    """Knowledge bases only on chat aliases; the query helpers must be other chat aliases."""
    if model.knowledge_bases and model.mode != "chat":
        yield f"models.{alias}.knowledge_bases", "knowledge bases are injected into chat aliases only"
    for field in ("rewrite_with", "translate_with"):
        helper = getattr(model.retrieval, field)
        if helper is None:
            continue
        where = f"models.{alias}.retrieval.{field}"
        if helper not in cfg.models:
            yield where, f"no model alias named {helper!r}"
        elif helper == alias or cfg.models[helper].knowledge_bases or cfg.models[helper].mode != "chat":
            yield where, "must be another chat alias without knowledge bases"
    if model.retrieval.template is not None and "{passages}" not in model.retrieval.template:
        yield f"models.{alias}.retrieval.template", "must contain {passages}"


def _check_keys(cfg: GatewayConfig) -> Iterator[tuple[str, str]]:
    names: set[str] = set()
    values: set[str] = set()
    for i, key in enumerate(cfg.keys):
        if key.name in names:
            yield f"keys[{i}].name", f"duplicate key name {key.name!r}"
        if key.key in values:
            yield f"keys[{i}].key", "the same key value is used twice"
        names.add(key.name)
        values.add(key.key)
        for j, alias in enumerate(key.models or []):
            if alias not in cfg.models:
                yield f"keys[{i}].models[{j}]", f"no model alias named {alias!r}"
        for alias in key.per_model:
            if alias not in cfg.models:
                yield f"keys[{i}].per_model.{alias}", f"no model alias named {alias!r}"
        if key.team is not None and key.team not in cfg.teams:
            yield f"keys[{i}].team", f"no team named {key.team!r} under teams"


REDIS_URL_ENV = "SWITCHYARD_REDIS_URL"


def parse_config(
    text: str,
    provider_types: Iterable[str],
    env: Mapping[str, str] | None = None,
    needs_base_url: Iterable[str] = (),
) -> GatewayConfig:
    """Parse and validate config text; raises ConfigError listing every problem found."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"invalid YAML: {exc}")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([("", "the config must be a mapping at the top level")])
    environ = os.environ if env is None else env
    data, problems = interpolate(raw, environ)
    if data.get("redis_url") is None and environ.get(REDIS_URL_ENV):
        data["redis_url"] = environ[REDIS_URL_ENV]  # like SWITCHYARD_DATABASE_URL: deployments set it outside
    try:
        cfg = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        reported = {path for path, _ in problems}
        raise ConfigError(problems + [p for p in pydantic_problems(exc) if p[0] not in reported]) from None
    if problems:
        raise ConfigError(problems)
    problems = cross_check(cfg, provider_types, needs_base_url)
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(
    path: str | Path,
    provider_types: Iterable[str],
    env: Mapping[str, str] | None = None,
    needs_base_url: Iterable[str] = (),
) -> GatewayConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("", f"cannot read {path}: {exc.__class__.__name__}: {exc}")]) from None
    return parse_config(text, provider_types, env, needs_base_url)
