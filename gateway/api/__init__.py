"""HTTP handlers: the raw-ASGI data plane and the Litestar control plane."""
