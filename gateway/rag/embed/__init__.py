"""Embedders for knowledge bases: the bundled local model (a worker process in its own environment) or any
embedding alias of the gateway itself."""

from gateway.rag.embed.base import Embedder, EmbedderError

__all__ = ["Embedder", "EmbedderError"]
