"""Wire formats: OpenAI request checks, Server-Sent Events."""
