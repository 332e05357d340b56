"""Hooks that act on requests before routing and on answers after: reasoning split, later RAG and usage."""
