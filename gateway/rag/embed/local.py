"""The bundled local embedder: all-MiniLM-L6-v2 in a worker process of its own venv (.venv-embed), so torch never
enters the gateway's process. JSON lines over the worker's pipes; worker.py documents the protocol.

The worker starts on the first call and answers one batch at a time (callers take turns batch by batch); it is
killed when it hangs or breaks the protocol, and the next call starts a fresh one. A worker that died while idle
is noticed by the call that next uses it, which retries once on a fresh worker.
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import orjson

from gateway.rag.embed.base import EmbedderError

WORKER: Final = Path(__file__).with_name("worker.py")
PYTHON_ENV: Final = "SWITCHYARD_EMBED_PYTHON"
INSTALL_HINT: Final = "the local embedder is not installed: run `make embedder` (creates .venv-embed)"
PASSED_ENV: Final = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR")
"""The only variables of the gateway's environment the worker sees (the rest holds secrets)."""
WORKER_ENV: Final[Mapping[str, str]] = MappingProxyType(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TQDM_DISABLE": "1",
    }
)
DENSE_WEIGHT: Final[Mapping[str, float]] = MappingProxyType({"zh": 0.0, "other": 0.0, "mixed": 0.5})
"""all-MiniLM-L6-v2's vocabulary holds only a few hundred CJK characters: its vectors of such text are noise."""
STDERR_TAIL: Final = 8192
"""Bytes of the worker's stderr kept for error messages and the log."""
STOP_GRACE: Final = 5.0
"""Seconds aclose() gives the worker to exit after SIGTERM before it is killed."""
FRAME_SLACK: Final = 1 << 16

log = logging.getLogger("switchyard.rag")


def default_python(root: Path) -> str:
    """The worker's interpreter: $SWITCHYARD_EMBED_PYTHON, else the project's .venv-embed."""
    return os.environ.get(PYTHON_ENV) or str(root / ".venv-embed" / "bin" / "python")


class _WorkerDied(EmbedderError):
    """The worker's pipes closed under a request: it crashed or was killed."""


class _Worker:
    """One running worker process, and the tail of its stderr (always drained, so the worker never blocks on it)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._tail = bytearray()
        self._drain = asyncio.create_task(self._read_stderr(), name="embed-worker-stderr")

    async def _read_stderr(self) -> None:
        """Keep the last STDERR_TAIL bytes of the worker's stderr until it closes."""
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.read(1 << 16):
            self._tail += chunk
            del self._tail[:-STDERR_TAIL]

    def last_lines(self, count: int) -> list[str]:
        """The last `count` non-blank lines the worker wrote to stderr."""
        lines = self._tail.decode("utf-8", "replace").replace("\r", "\n").splitlines()
        return [line.strip() for line in lines if line.strip()][-count:]

    async def send(self, frame: Mapping[str, Any]) -> None:
        """Write one request frame; _WorkerDied when its stdin is gone."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(orjson.dumps(frame) + b"\n")
            await self.process.stdin.drain()
        except ConnectionError:
            raise _WorkerDied("its stdin is closed") from None

    async def receive(self) -> dict[str, Any]:
        """Read one frame; _WorkerDied at end of stream, ValueError for anything but a JSON object."""
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise _WorkerDied("end of stream")
        frame = orjson.loads(line)
        if not isinstance(frame, dict):
            raise ValueError("a frame is a JSON object")
        return frame

    async def stop(self, grace: float) -> None:
        """Close its stdin and SIGTERM it (SIGKILL at once when grace is 0, or after grace seconds); reap it."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                if grace > 0:
                    self.process.terminate()
                else:
                    self.process.kill()
            try:
                async with asyncio.timeout(grace or None):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
        await self.process.wait()
        _, pending = await asyncio.wait({self._drain}, timeout=1.0)
        for task in pending:
            task.cancel()

    def describe_exit(self) -> str:
        """Its exit status and last stderr line, for an operator."""
        last = self.last_lines(1)
        return f"exit status {self.process.returncode}" + (f": {last[0]}" if last else "")


class LocalEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions, English) in a worker subprocess run by the interpreter `python`."""

    dimensions: Final = 384

    def __init__(self, python: str, *, batch_size: int = 32, timeout: float = 120.0, threads: int = 1) -> None:
        if batch_size < 1 or threads < 1 or timeout <= 0:
            raise ValueError("batch_size and threads are at least 1, timeout is positive")
        self._python = python
        self._batch_size = batch_size
        self._timeout = timeout
        self._threads = threads
        self._worker: _Worker | None = None
        self._lock = asyncio.Lock()

    @property
    def dense_weight(self) -> Mapping[str, float]:
        """No trust in its vectors of Chinese or other non-Latin text, half for mixed text, full for English."""
        return DENSE_WEIGHT

    @property
    def pid(self) -> int | None:
        """The running worker's process id; None before the first call and after aclose()."""
        return self._worker.process.pid if self._worker is not None else None

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text, in order, in batches of batch_size; EmbedderError when it cannot.

        The lock is taken per batch, so a short query waits for at most one batch of a long ingestion."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            async with self._lock:
                vectors += await self._embed_batch(list(texts[start : start + self._batch_size]))
        return vectors

    async def aclose(self) -> None:
        """Stop the worker: SIGTERM, then SIGKILL after a few seconds. A later call starts a new one."""
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop(STOP_GRACE)

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        """Vectors of one batch; a reused worker found dead gets one retry on a fresh worker."""
        worker = self._worker
        if worker is not None and worker.process.returncode is None:
            with contextlib.suppress(_WorkerDied):
                return await self._exchange(worker, texts)
        elif worker is not None:
            await self._discard(worker)
        return await self._exchange(await self._start(), texts)

    async def _exchange(self, worker: _Worker, texts: list[str]) -> list[list[float]]:
        """Send one request and decode its answer; a worker that dies, hangs or breaks the protocol is killed."""
        try:
            async with asyncio.timeout(self._timeout):
                await worker.send({"texts": texts})
                reply = await worker.receive()
            vectors = None if "error" in reply else _decode(reply, len(texts), self.dimensions)
        except _WorkerDied:
            await self._discard(worker)
            raise _WorkerDied(f"the local embedder's worker stopped ({worker.describe_exit()})") from None
        except BaseException as exc:
            await self._discard(worker)
            if isinstance(exc, Exception):
                raise self._failure(worker, exc) from None
            raise
        if vectors is None:
            raise EmbedderError(f"the local embedder could not embed: {reply['error']}")
        return vectors

    async def _start(self) -> _Worker:
        """Start a worker and wait for its ready frame; EmbedderError (with the install hint) when it cannot."""
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env(),
                limit=FRAME_SLACK + self._batch_size * self.dimensions * 6,
                start_new_session=True,
            )
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            raise EmbedderError(INSTALL_HINT) from None
        worker = _Worker(process)
        try:
            async with asyncio.timeout(self._timeout):
                ready = await worker.receive()
        except BaseException as exc:
            await worker.stop(0)
            if isinstance(exc, Exception):
                raise self._failure(worker, exc, starting=True) from None
            raise
        if ready.get("ready") is not True or ready.get("dimensions") != self.dimensions:
            await worker.stop(0)
            reason = ready.get("error") or f"unexpected first frame {str(ready)[:200]}"
            raise EmbedderError(f"the local embedder could not start ({reason}): run `make embedder`")
        log.info("local embedder worker %d ready (%d threads)", process.pid, self._threads)
        self._worker = worker
        return worker

    def _failure(self, worker: _Worker, exc: Exception, *, starting: bool = False) -> EmbedderError:
        """The operator's message for a worker that timed out, died or broke the protocol."""
        doing = "start" if starting else "answer"
        if isinstance(exc, TimeoutError):
            return EmbedderError(f"the local embedder did not {doing} within {self._timeout:g} s and was stopped")
        if isinstance(exc, _WorkerDied):
            return EmbedderError(f"the local embedder's worker died before it could {doing}: {worker.describe_exit()}")
        log.warning("local embedder worker broke the protocol: %r", exc)
        return EmbedderError(f"the local embedder's worker sent an unreadable answer ({type(exc).__name__}); restarted")

    async def _discard(self, worker: _Worker) -> None:
        """Kill a failed worker, log its last words, and forget it."""
        if self._worker is worker:
            self._worker = None
        await worker.stop(0)
        log.warning("local embedder worker stopped (%s); last output: %s", worker.describe_exit(), worker.last_lines(9))

    def _argv(self) -> list[str]:
        """Interpreter, -I (isolated: no user site, no PYTHON* variables, not its own folder on sys.path), script."""
        return [self._python, "-I", str(WORKER), "--threads", str(self._threads)]

    def _env(self) -> dict[str, str]:
        """A minimal environment: locale, PATH and HOME, offline switches, thread counts; never the secrets."""
        env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        env.update(WORKER_ENV)
        env.update(OMP_NUM_THREADS=str(self._threads), MKL_NUM_THREADS=str(self._threads))
        return env


def _decode(reply: Mapping[str, Any], count: int, dimensions: int) -> list[list[float]]:
    """Rows of base64 float32 little-endian bytes; ValueError when the answer does not match the request."""
    raw = base64.b64decode(reply["vectors"], validate=True)
    if reply.get("count") != count or len(raw) != count * dimensions * 4:
        raise ValueError(f"expected {count} vectors of {dimensions} dimensions")
    values = array.array("f")
    values.frombytes(raw)
    if sys.byteorder == "big":
        values.byteswap()
    flat = values.tolist()
    return [flat[i * dimensions : (i + 1) * dimensions] for i in range(count)]
