"""The bundled local embedder against its real worker in .venv-embed (built by `make embedder`, which `make test`
runs first), plus a few stand-in workers (shell scripts) for the failures a real model will not produce on demand.

One real worker serves the module (a cold start takes about ten seconds here): the test that kills it pays one
restart, and the aclose test stops it last.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.rag.embed import Embedder, EmbedderError
from gateway.rag.embed.local import INSTALL_HINT, LocalEmbedder, default_python

ROOT = Path(__file__).resolve().parents[2]
PYTHON = default_python(ROOT)
PASSAGE = (
    "The gateway authenticates each application by the hash of its key, resolves the model alias against the "
    "configuration snapshot, checks rate limits and budgets, and then forwards the request to one of the "
    "upstream routes. When the upstream fails before the first byte, the router retries another route, and "
    "after repeated failures the route cools down for a while. Usage is recorded on a bounded queue and a "
    "background writer batches it into PostgreSQL, spooling to disk when the database is unavailable. "
)

SHARED = pytest.mark.asyncio(loop_scope="module")
"""For the tests on the module's worker, which lives in the module's event loop."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def embedder() -> AsyncIterator[LocalEmbedder]:
    local = LocalEmbedder(PYTHON, batch_size=32)
    yield local
    await local.aclose()


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def fake_python(tmp_path: Path, body: str) -> str:
    """A stand-in 'interpreter': a shell script that ignores its arguments and plays a worker."""
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@SHARED
async def test_it_is_an_embedder_that_distrusts_cjk(embedder: LocalEmbedder) -> None:
    protocol: Embedder = embedder
    assert protocol.dense_weight == {"zh": 0.0, "other": 0.0, "mixed": 0.5}
    assert await embedder.embed([]) == []


@SHARED
async def test_vectors_are_384_dimensional_unit_vectors(embedder: LocalEmbedder) -> None:
    vectors = await embedder.embed(["hello world", "Knowledge bases need an offline embedder.", ""])
    assert len(vectors) == 3
    for vector in vectors:
        assert len(vector) == 384
        assert math.isclose(math.sqrt(dot(vector, vector)), 1.0, abs_tol=1e-4)
    assert dot(vectors[0], vectors[1]) < 0.9


@SHARED
async def test_a_question_is_closest_to_its_answer(embedder: LocalEmbedder) -> None:
    question, answer, unrelated = await embedder.embed(
        ["How do I reset my password?", "Steps to change your account password", "The cafeteria serves lunch at noon"]
    )
    assert dot(question, answer) > dot(question, unrelated) + 0.2


@SHARED
async def test_batches_keep_the_order_of_the_texts(embedder: LocalEmbedder) -> None:
    texts = [
        f"Ticket {i}: the {['printer', 'invoice', 'laptop', 'VPN', 'badge'][i % 5]} issue number {i}" for i in range(70)
    ]
    batched = await embedder.embed(texts)
    singles = [(await embedder.embed([text]))[0] for text in texts]
    assert len(batched) == 70
    for i, vector in enumerate(batched):
        assert max(abs(a - b) for a, b in zip(vector, singles[i], strict=True)) < 1e-4
        similarities = [dot(vector, single) for single in singles]
        assert similarities.index(max(similarities)) == i


@SHARED
async def test_concurrent_callers_each_get_their_own_vectors(embedder: LocalEmbedder) -> None:
    texts = [[f"caller {c} text {i} about {word}" for i in range(40)] for c, word in enumerate(["tea", "rockets"])]
    expected = [await embedder.embed(group) for group in texts]
    results = await asyncio.gather(*(embedder.embed(group) for group in texts))
    for got, want in zip(results, expected, strict=True):
        assert all(max(abs(a - b) for a, b in zip(g, w, strict=True)) < 1e-4 for g, w in zip(got, want, strict=True))


@SHARED
async def test_the_event_loop_keeps_running_while_it_embeds(embedder: LocalEmbedder) -> None:
    loop = asyncio.get_running_loop()
    ticking = asyncio.Event()
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(loop.time())
            ticking.set()
            await asyncio.sleep(0.01)

    tick_task = asyncio.create_task(ticker())
    await ticking.wait()
    began = loop.time()
    vectors = await embedder.embed([f"{i}. {PASSAGE}" for i in range(64)])
    took = loop.time() - began
    tick_task.cancel()
    assert len(vectors) == 64
    assert took > 1.0, "the batches were too quick to show a stall"
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 10
    assert max(gaps) < 0.5, f"the loop stalled for {max(gaps):.2f} s of {took:.2f} s"  # a batch takes seconds


@SHARED
async def test_a_killed_worker_is_restarted_by_the_next_call(embedder: LocalEmbedder) -> None:
    before = await embedder.embed(["restart me"])
    pid = embedder.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    after = await embedder.embed(["restart me"])
    assert embedder.pid not in (None, pid)
    assert max(abs(a - b) for a, b in zip(before[0], after[0], strict=True)) < 1e-5


@SHARED
async def test_aclose_stops_the_worker(embedder: LocalEmbedder) -> None:
    await embedder.embed(["start"])
    pid = embedder.pid
    assert pid is not None and is_running(pid)
    await embedder.aclose()
    assert embedder.pid is None
    assert not is_running(pid)


async def test_a_missing_interpreter_says_how_to_install_it(tmp_path: Path) -> None:
    local = LocalEmbedder(str(tmp_path / "no-such-venv" / "bin" / "python"))
    with pytest.raises(EmbedderError) as caught:
        await local.embed(["anything"])
    assert str(caught.value) == INSTALL_HINT
    assert local.pid is None


async def test_a_worker_that_cannot_load_the_model_says_so(tmp_path: Path) -> None:
    body = 'echo \'{"error": "could not load the model: ModuleNotFoundError: torch"}\'\nexit 1\n'
    local = LocalEmbedder(fake_python(tmp_path, body))
    with pytest.raises(EmbedderError, match=r"ModuleNotFoundError: torch.*make embedder"):
        await local.embed(["anything"])
    assert local.pid is None


async def test_a_hung_worker_is_killed(tmp_path: Path) -> None:
    body = 'echo \'{"ready": true, "dimensions": 384}\'\necho "loading..." >&2\nexec sleep 600\n'
    local = LocalEmbedder(fake_python(tmp_path, body), timeout=0.5)
    try:
        with pytest.raises(EmbedderError, match=r"did not answer within 0.5 s"):
            await local.embed(["anything"])
        assert local.pid is None
    finally:
        await local.aclose()


async def test_a_worker_that_dies_mid_request_reports_its_last_words(tmp_path: Path) -> None:
    body = 'echo \'{"ready": true, "dimensions": 384}\'\nread line\necho "RuntimeError: out of memory" >&2\nexit 3\n'
    local = LocalEmbedder(fake_python(tmp_path, body))
    with pytest.raises(EmbedderError, match=r"exit status 3: RuntimeError: out of memory"):
        await local.embed(["anything"])
    assert local.pid is None


async def test_a_worker_that_breaks_the_protocol_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    body = f"""echo '{{"ready": true, "dimensions": 384}}'
echo $$ > {pidfile}
read line
echo "Some library printed this"
exec sleep 600
"""
    local = LocalEmbedder(fake_python(tmp_path, body))
    with pytest.raises(EmbedderError, match=r"unreadable answer"):
        await local.embed(["anything"])
    assert local.pid is None
    assert not is_running(int(pidfile.read_text()))


async def test_an_error_answer_keeps_the_worker(tmp_path: Path) -> None:
    body = 'echo \'{"ready": true, "dimensions": 384}\'\nwhile read line; do echo \'{"error": "no"}\'; done\n'
    local = LocalEmbedder(fake_python(tmp_path, body))
    try:
        with pytest.raises(EmbedderError, match=r"could not embed: no"):
            await local.embed(["one"])
        pid = local.pid
        with pytest.raises(EmbedderError, match=r"could not embed: no"):
            await local.embed(["two"])
        assert pid is not None and local.pid == pid
    finally:
        await local.aclose()


async def test_the_worker_sees_none_of_the_gateways_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_CANARY_SECRET", "sk-canary")
    body = 'printf \'{"error": "%s"}\\n\' "$(env | cut -d= -f1 | sort | tr "\\n" " ")"\n'
    local = LocalEmbedder(fake_python(tmp_path, body), threads=2)
    with pytest.raises(EmbedderError) as caught:
        await local.embed(["anything"])
    names = set(str(caught.value).split("(", 1)[1].split(")")[0].split())
    assert "SWITCHYARD_CANARY_SECRET" not in names
    assert {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PATH"} <= names
    assert names <= {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "PWD", "SHLVL", "_"} | {
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_HUB_DISABLE_TELEMETRY",
        "TOKENIZERS_PARALLELISM",
        "TQDM_DISABLE",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
    }


def test_default_python_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHYARD_EMBED_PYTHON", raising=False)
    assert default_python(Path("/srv/switchyard")) == "/srv/switchyard/.venv-embed/bin/python"
    monkeypatch.setenv("SWITCHYARD_EMBED_PYTHON", "/opt/embed/bin/python")
    assert default_python(Path("/srv/switchyard")) == "/opt/embed/bin/python"
