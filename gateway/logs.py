"""Logging set-up for the server: one line per record on stderr; access lines are JSON already."""

from __future__ import annotations

import logging
import sys

HANDLER_NAME = "switchyard"


def configure_logging(level: int = logging.INFO) -> None:
    """Idempotent: each uvicorn worker process calls it once through the app factory."""
    root = logging.getLogger()
    if any(h.get_name() == HANDLER_NAME for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations report only problems
