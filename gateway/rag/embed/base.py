"""What every embedder offers the knowledge bases: texts in, vectors out, off the event loop, in batches; and how
far its vectors can be trusted per language (the dense side of retrieval is weighted by it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class EmbedderError(Exception):
    """The embedder could not embed (not installed, crashed, timed out, upstream error); the message is safe to
    show an operator: it never holds a key or a stack trace."""


class Embedder(Protocol):
    """Turns texts into vectors of one fixed dimension count."""

    @property
    def dense_weight(self) -> Mapping[str, float]:
        """Language ("zh", "en", "mixed", "other") -> trust in the vectors, 0..1; languages not named: 1."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order; EmbedderError when it cannot."""
        ...
