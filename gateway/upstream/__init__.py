"""The pooled upstream HTTP client behind a small interface."""
