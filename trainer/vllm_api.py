"""vLLM's side of serving adapters: its runtime LoRA API (load, unload, list; only when vLLM runs with
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), errors mapped to a `DeployError` with a kind and a secret-free message, the
`vllm serve` command that serves adapters from its start, and the chat-template check (see trainer.deploy)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from gateway.errors import redact
from trainer import process
from trainer.store import checked

RUNTIME_ENV: Final = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
TIMEOUT: Final = httpx.Timeout(120.0, connect=5.0)
"""Loading an adapter reads its weights: generous for a read, short for a connect."""
USAGE_KINDS: Final = frozenset({"unknown_provider", "not_ready", "not_deployed", "conflict"})
"""DeployError kinds that a different command line fixes (the CLI exits 2 for them)."""
LORA_RANKS: Final = (8, 16, 32, 64, 128, 256, 320, 512)
"""The `--max-lora-rank` values vLLM accepts."""


class DeployError(Exception):
    """A deployment step that failed; the message names what to do and never carries a key."""

    def __init__(self, message: str, kind: str = "failed") -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def usage(self) -> bool:
        """True when the command line itself was wrong (an unknown name, a job not ready)."""
        return self.kind in USAGE_KINDS


# --- vLLM's runtime LoRA API ----------------------------------------------------------------------------------


def where(base_url: str) -> str:
    """The base URL fit for a message: no user info, no query."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def _call(
    client: httpx.AsyncClient, method: str, base_url: str, route: str, *, body: Any, api_key: str | None
) -> httpx.Response:
    """One request to vLLM; a connection or timeout failure becomes DeployError `unreachable`."""
    url = f"{base_url.rstrip('/')}/{route}"
    try:
        return await client.request(method, url, json=body, headers=_headers(api_key), timeout=TIMEOUT)
    except httpx.TimeoutException:
        raise DeployError(f"vLLM at {where(base_url)} did not answer /{route} in time", "unreachable") from None
    except httpx.TransportError as exc:
        reason = redact(f"{type(exc).__name__}: {exc}", (api_key or "",))[:200]
        raise DeployError(f"cannot reach vLLM at {where(base_url)} ({reason})", "unreachable") from None


def vllm_message(response: httpx.Response) -> str | None:
    """vLLM's own error message (its current `{"error": {...}}` and older flat shapes); None for anything else,
    such as FastAPI's `{"detail": "Not Found"}` for a route vLLM did not register."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error", body) if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else None


def _common_failure(response: httpx.Response, base_url: str, route: str) -> DeployError | None:
    """The failures every route shares: a refused key, and the runtime API switched off."""
    status = response.status_code
    if status in (401, 403):
        return DeployError(
            f"vLLM at {where(base_url)} refused the credentials (HTTP {status}): check the provider's api_key",
            "unauthorized",
        )
    if status == 404 and vllm_message(response) is None and route.endswith("lora_adapter"):
        return DeployError(
            f"vLLM at {where(base_url)} has no /{route}: start it with {RUNTIME_ENV}=True (and give the provider "
            "vLLM's base URL, ending in /v1), or serve the adapter from vLLM's start with --lora-modules "
            "(see `switchyard trainer serve-command`)",
            "runtime_off",
        )
    return None


def _detail(response: httpx.Response) -> str:
    return (vllm_message(response) or response.text)[:300]


def _safe(error: DeployError, api_key: str | None) -> DeployError:
    """The error with the key (and anything shaped like one) taken out of its message."""
    return DeployError(redact(str(error), (api_key or "",)), error.kind)


def _load_failure(response: httpx.Response, base_url: str, name: str, path: str) -> DeployError:
    common = _common_failure(response, base_url, "load_lora_adapter")
    if common is not None:
        return common
    status, detail = response.status_code, _detail(response)
    if status == 404:
        message = f"vLLM found no adapter at {path} (the folder must exist on vLLM's machine): {detail}"
        return DeployError(message, "bad_path")
    if status == 400 and "already" in detail:
        return DeployError(
            f"vLLM already has an adapter named {name!r}: undeploy it or choose another name", "already_loaded"
        )
    return DeployError(f"vLLM refused to load {name!r} (HTTP {status}): {detail}", "refused")


async def load_adapter(
    base_url: str, name: str, path: str | Path, *, api_key: str | None = None, client: httpx.AsyncClient
) -> None:
    """`POST {base_url}/load_lora_adapter`: vLLM loads the adapter folder at `path` (a path on vLLM's machine)."""
    body = {"lora_name": name, "lora_path": str(path)}
    response = await _call(client, "POST", base_url, "load_lora_adapter", body=body, api_key=api_key)
    if response.status_code != 200:
        raise _safe(_load_failure(response, base_url, name, str(path)), api_key)


async def unload_adapter(base_url: str, name: str, *, api_key: str | None = None, client: httpx.AsyncClient) -> None:
    """`POST {base_url}/unload_lora_adapter`; DeployError `not_loaded` when vLLM has no adapter of that name."""
    response = await _call(client, "POST", base_url, "unload_lora_adapter", body={"lora_name": name}, api_key=api_key)
    if response.status_code != 200:
        raise _safe(_unload_failure(response, base_url, name), api_key)


def _unload_failure(response: httpx.Response, base_url: str, name: str) -> DeployError:
    common = _common_failure(response, base_url, "unload_lora_adapter")
    if common is not None:
        return common
    detail = _detail(response)
    if response.status_code == 404:
        return DeployError(f"vLLM has no adapter named {name!r} loaded: {detail}", "not_loaded")
    return DeployError(f"vLLM refused to unload {name!r} (HTTP {response.status_code}): {detail}", "refused")


async def adapter_card(
    base_url: str, name: str, *, api_key: str | None = None, client: httpx.AsyncClient
) -> dict[str, Any] | None:
    """The `/models` entry of adapter `name` (one with a `parent`); None when vLLM does not list it."""
    response = await _call(client, "GET", base_url, "models", body=None, api_key=api_key)
    common = _common_failure(response, base_url, "models")
    if common is not None or response.status_code != 200:
        message = (
            f"{where(base_url)}/models answered HTTP {response.status_code}: is that vLLM's base URL (ending in /v1)?"
        )
        raise common or DeployError(message, "refused")
    try:
        cards = response.json().get("data") or []
    except (ValueError, AttributeError):
        raise DeployError(f"vLLM at {where(base_url)} sent a /models list that is not JSON", "refused") from None
    return next((c for c in cards if isinstance(c, dict) and c.get("id") == name and c.get("parent")), None)


async def listed(base_url: str, name: str, *, api_key: str | None = None, client: httpx.AsyncClient) -> bool:
    """True when vLLM's `/models` lists `name` as an adapter of a base model (with `parent`)."""
    return await adapter_card(base_url, name, api_key=api_key, client=client) is not None


# --- the command that serves adapters from vLLM's start -------------------------------------------------------


def rank_limit(rank: int) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that holds an adapter of this rank."""
    for allowed in LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise DeployError(f"LoRA rank {rank} is over vLLM's largest ({LORA_RANKS[-1]})", "refused")


def serve_command(
    base_model_dir: str | Path,
    adapters: Mapping[str, str | Path],
    *,
    template_file: str | Path | None = None,
    max_lora_rank: int = 8,
    python: str = "python",
) -> list[str]:
    """The argv of a vLLM OpenAI server for the base model with these adapters (name -> folder) loaded at start;
    text for the operator (`--host`, `--port`, `--api-key` are theirs to add), never executed by the gateway."""
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(base_model_dir)]
    argv += ["--enable-lora", "--max-lora-rank", str(max_lora_rank)]
    if adapters:
        argv += ["--lora-modules", *(f"{checked(name)}={path}" for name, path in adapters.items())]
    if template_file is not None:
        argv += ["--chat-template", str(template_file)]
    return argv


TEMPLATE_PROBE: Final = """
import sys
from transformers import AutoTokenizer
from llamafactory.data import get_template_and_fix_tokenizer
from llamafactory.hparams import DataArguments

base, name, out = sys.argv[1:4]
tokenizer = AutoTokenizer.from_pretrained(base)
own = tokenizer.chat_template
template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template=name))
for system in (None, "Answer briefly."):
    turn = [{"role": "user", "content": "What is one and two?"}]
    trained, _ = template.encode_oneturn(tokenizer, [*turn, {"role": "assistant", "content": "Three."}], system)
    asked = ([{"role": "system", "content": system}] if system else []) + turn
    text = own and tokenizer.apply_chat_template(asked, chat_template=own, add_generation_prompt=True, tokenize=False)
    if not text or tokenizer.encode(text, add_special_tokens=False) != trained:
        open(out, "w", encoding="utf-8").write(template._get_jinja_template(tokenizer))
        sys.exit(3)
"""
"""Run by the trainer venv's python: exit 0 when the base tokenizer's own chat template renders prompts to the very
tokens LLaMA-Factory's `template` trained on (with and without a system message); else write that template as
Jinja to `out` and exit 3."""
DIFFERS: Final = 3


async def check_template(venv: Path, base_model_dir: str | Path, template: str, job_dir: Path) -> Path | None:
    """None when vLLM's default (the base tokenizer's template) agrees with the job's training template; else the
    Jinja file of the latter (`<job dir>/chat_template.jinja`), for vLLM's `--chat-template`."""
    out, log = job_dir / "chat_template.jinja", job_dir / "template_check.log"
    out.unlink(missing_ok=True)
    home = job_dir / "home"
    home.mkdir(exist_ok=True)
    argv = [str(venv / "bin" / "python"), "-c", TEMPLATE_PROBE, str(base_model_dir), template, str(out)]
    run = await process.start(argv, log_path=log, cwd=job_dir, env=process.child_env(venv, home))
    try:
        await run.wait(300)
    except BaseException:
        await asyncio.shield(run.cancel())
        raise
    if run.returncode == 0:
        return None
    if run.returncode == DIFFERS and out.is_file():
        return out
    raise DeployError(f"the chat template check failed: {last_line(log)} (see {log})", "failed")


def last_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return next((ln for ln in reversed(lines) if "rror" in ln), lines[-1] if lines else "")[:300]
