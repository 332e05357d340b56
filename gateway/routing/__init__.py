"""Choice of routes and fallbacks."""
