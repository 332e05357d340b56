"""Provider adapters, one module or package per upstream API, registered in registry.py."""
