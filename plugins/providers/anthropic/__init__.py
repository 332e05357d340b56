"""The `anthropic` adapter: OpenAI chat requests to Anthropic's Messages API and back (unary and streamed)."""
