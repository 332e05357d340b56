"""Training data from real traffic: the chat requests an alias logged (`log_requests: true`) in the usage ledger,
turned into OpenAI `messages` rows (the request's messages, then the answer as the assistant turn), ready to be
validated and stored as a dataset. Streams (whose answer is not kept) and failed requests are skipped."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Final

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

ROLES: Final = frozenset({"system", "user", "assistant"})
LOGGED_SQL: Final = text(
    """
    SELECT request_log FROM usage_ledger
    WHERE request_log IS NOT NULL AND status = 'ok' AND ts >= :since
      AND (CAST(:alias AS text) IS NULL OR alias = :alias)
    ORDER BY ts, request_id, attempt
    LIMIT :limit
    """
)


def _text(content: Any) -> str | None:
    """A message's text: a string, or the text parts of a list; None when there is no text."""
    if isinstance(content, str):
        return content.strip() or None
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
        joined = "\n".join(p for p in parts if isinstance(p, str)).strip()
        return joined or None
    return None


def _answer(response: Any) -> str | None:
    """The assistant's text of a logged chat completion (the JSON text the gateway kept)."""
    if not isinstance(response, str):
        return None
    try:
        parsed = orjson.loads(response)
        return _text(parsed["choices"][0]["message"]["content"])
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None


def to_row(log: Mapping[str, Any]) -> dict[str, Any] | None:
    """One `messages` row from a ledger `request_log`, or None when it is not a complete text chat exchange."""
    request, answer = log.get("request"), _answer(log.get("response"))
    messages = request.get("messages") if isinstance(request, Mapping) else None
    if answer is None or not isinstance(messages, list):
        return None
    turns: list[dict[str, str]] = []
    for message in messages:
        role = message.get("role") if isinstance(message, Mapping) else None
        content = _text(message.get("content")) if isinstance(message, Mapping) else None
        if role not in ROLES or content is None:
            return None
        turns.append({"role": str(role), "content": content})
    if not turns or turns[-1]["role"] != "user":
        return None
    return {"messages": [*turns, {"role": "assistant", "content": answer}]}


async def logged_rows(
    engine: AsyncEngine, since: datetime, *, alias: str | None = None, limit: int = 100_000
) -> list[dict[str, Any]]:
    """The `messages` rows of the logged exchanges since `since` (of one alias, if given)."""
    async with engine.connect() as conn:
        result = await conn.execute(LOGGED_SQL, {"since": since, "alias": alias, "limit": limit})
        logs = [row[0] for row in result]
    return list(_rows(logs))


def _rows(logs: list[Any]) -> Iterator[dict[str, Any]]:
    for log in logs:
        row = to_row(log) if isinstance(log, Mapping) else None
        if row is not None:
            yield row


def as_jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)
