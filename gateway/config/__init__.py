"""Config file model, loading and validation, and the immutable runtime snapshot."""
