"""The file config and the objects the admin API keeps in PostgreSQL, merged into one validated config.

File objects win and are read-only through the API; database objects fill in around them. The result is
checked exactly like a config file (same schema, same cross-checks), so a bad database object can never
reach the request path: the merge fails and the gateway keeps serving the last good config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from gateway.config.loader import ConfigError, cross_check, pydantic_problems
from gateway.config.model import GatewayConfig, KeySpec
from gateway.config.snapshot import ClientKey, build_key

Decrypt = Callable[[str, str], str]
"""(ciphertext, provider name) -> the provider's API key."""


def provider_entry(row: Mapping[str, Any], decrypt: Decrypt) -> dict[str, Any]:
    """A providers row as the YAML `providers.<name>` mapping says it."""
    entry: dict[str, Any] = {"type": row["type"], **(row.get("settings") or {})}
    if row.get("base_url"):
        entry["base_url"] = row["base_url"]
    if row.get("api_key_enc"):
        entry["api_key"] = decrypt(row["api_key_enc"], row["name"])
    if row.get("headers"):
        entry["headers"] = dict(row["headers"])
    return entry


def merge(
    file_config: GatewayConfig,
    providers: Iterable[Mapping[str, Any]],
    models: Iterable[Mapping[str, Any]],
    teams: Iterable[Mapping[str, Any]],
    *,
    decrypt: Decrypt,
    provider_types: Iterable[str],
    needs_base_url: Iterable[str] = (),
) -> GatewayConfig:
    """The file config with the enabled database objects added; ConfigError naming the bad object if any."""
    data = file_config.model_dump(mode="python", exclude_unset=False)
    for row in providers:
        if row.get("enabled", True) and row["name"] not in data["providers"]:
            data["providers"][row["name"]] = provider_entry(row, decrypt)
    for row in models:
        if row.get("enabled", True) and row["alias"] not in data["models"]:
            data["models"][row["alias"]] = dict(row["spec"])
    for row in teams:
        if row["name"] not in data["teams"]:
            data["teams"][row["name"]] = {"budget": row.get("budget")}
    try:
        merged = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(pydantic_problems(exc)) from None
    problems = cross_check(merged, provider_types, needs_base_url)
    if problems:
        raise ConfigError(problems)
    return merged


def managed_keys(
    rows: Iterable[Mapping[str, Any]],
    config: GatewayConfig,
    team_names: Mapping[int, str],
    usernames: Mapping[int, str],
    now: datetime,
) -> dict[str, ClientKey]:
    """The database's live keys (not revoked, not expired) by their sha256 hex, as the request path reads them."""
    out: dict[str, ClientKey] = {}
    for row in rows:
        if row.get("revoked_at") is not None or (row.get("expires_at") is not None and row["expires_at"] <= now):
            continue
        spec = KeySpec(
            name=row["name"],
            models=row.get("models"),
            rpm=row.get("rpm"),
            tpm=row.get("tpm"),
            budget=row.get("budget"),
            team=team_names.get(row["team_id"]) if row.get("team_id") is not None else None,
            user=usernames.get(row["owner_id"]) if row.get("owner_id") is not None else None,
        )
        out[row["key_hash"]] = build_key(spec, config)
    return out
