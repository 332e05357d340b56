"""The admin (control-plane) API: operators' identities, sessions and management endpoints."""
