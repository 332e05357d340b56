"""Pure translations between OpenAI embeddings and Gemini's batchEmbedContents: request out, answer back."""

from __future__ import annotations

import base64
import struct
from typing import Any

from gateway.errors import InvalidRequest, UpstreamError

Json = dict[str, Any]
BATCH_LIMIT = 100
"""batchEmbedContents takes at most this many requests; longer inputs go in several batches."""


def to_batch_embeds(body: Json, model: str) -> list[Json]:
    """batchEmbedContents bodies, one request entry per input string; `dimensions` -> outputDimensionality."""
    inputs = body["input"]
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not all(isinstance(text, str) and text for text in texts):
        raise InvalidRequest(
            "Gemini embeddings take non-empty strings; token arrays are not supported",
            param="input",
            code="unsupported_parameter",
        )
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be float or base64", param="encoding_format")
    extra: Json = {"outputDimensionality": body["dimensions"]} if body.get("dimensions") else {}
    requests = [{"model": f"models/{model}", "content": {"parts": [{"text": text}]}, **extra} for text in texts]
    return [{"requests": requests[i : i + BATCH_LIMIT]} for i in range(0, len(requests), BATCH_LIMIT)]


def _encode(values: list[float], fmt: Any) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return values


def from_batch_embeds(responses: list[Json], body: Json, model: str) -> Json:
    """The OpenAI embeddings list for the batchEmbedContents answers, in the requested encoding."""
    embeddings = [e for r in responses for e in (r.get("embeddings") or [None])]
    inputs = body["input"]
    expected = 1 if isinstance(inputs, str) else len(inputs)
    if len(embeddings) != expected:
        raise UpstreamError("the upstream answered with the wrong number of embeddings")
    data = []
    for i, item in enumerate(embeddings):
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list):
            raise UpstreamError("the upstream answered with an embedding without values")
        data.append({"object": "embedding", "index": i, "embedding": _encode(values, body.get("encoding_format"))})
    tokens = sum((r.get("usageMetadata") or {}).get("promptTokenCount") or 0 for r in responses)
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
