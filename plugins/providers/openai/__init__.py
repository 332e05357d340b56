"""The OpenAI-compatible adapter."""
