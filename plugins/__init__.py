"""Strategy plugins: provider adapters (providers/) and request/response hooks (hooks/)."""
