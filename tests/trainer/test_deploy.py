"""Serving a job's adapter: vLLM's runtime LoRA API against a fake vLLM (every error it answers), the vLLM command,
and deploy/undeploy end to end: the alias written to a real PostgreSQL, a real gateway on that database answering
the `openai` SDK through the fake vLLM, the CLI. Export and the chat-template check run LLaMA-Factory for real
on the tiny model in .venv-trainer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.admin.store import repo
from gateway.config.loader import load_config
from gateway.config.model import GatewayConfig, TrainerConfig
from gateway.store.engine import create_engine
from gateway.store.migrate import upgrade
from plugins.providers.registry import NEEDS_BASE_URL, provider_types
from tests.conftest import FULL_KEY, Gateway, free_port, start_gateway, stop_gateway, wait_until
from tests.fakes.vllm_server import FakeVLLM
from tests.store_fixtures import create_database, drop_database
from trainer import deploy, vllm_api
from trainer.service import TrainerService
from trainer.spec import JobSpec, Method
from trainer.store import JobRecord, JobStatus, StoreError, TrainerStore
from trainer.vllm_api import DeployError

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-trainer"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello adapter"}]
VLLM_KEY = "sk-canary-vllm-key-5e6f7a8b9c0d"
ENV = {"SWITCHYARD_ADMIN_PASSWORD": "owner-canary-Passw0rd-1234", "SWITCHYARD_JWT_SECRET": "jwt-canary-" + "y" * 40}


def make_adapter(folder: Path, rank: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}), encoding="utf-8")
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    return folder


def add_job(store: TrainerStore, name: str, *, status: JobStatus = "succeeded", method: Method = "lora") -> JobRecord:
    """A finished job as the scheduler leaves it (written final at once: a gateway's scheduler may be watching)."""
    spec = JobSpec(name=name, base_model="tiny", dataset="rows", method=method).model_dump()
    output = store.job_dir(name) / "output"
    record = JobRecord(name, spec, status=status, adapter={"path": str(output)})
    job = store.add_job(record)
    make_adapter(output)
    return job


def adapter_path(job: JobRecord) -> str:
    assert job.adapter is not None
    return str(job.adapter["path"])


@contextlib.contextmanager
def running(**options: Any) -> Iterator[FakeVLLM]:
    fake = FakeVLLM(**options)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module", params=[False, True], ids=["errors", "legacy-errors"])
def vllm(request: pytest.FixtureRequest) -> Iterator[FakeVLLM]:
    """vLLM with runtime updates on; its error bodies in the current shape, then in the older flat one."""
    with running(legacy_errors=request.param) as fake:
        yield fake


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


async def kind_of(work: Awaitable[Any]) -> tuple[str, str]:
    with pytest.raises(DeployError) as caught:
        await work
    return caught.value.kind, str(caught.value)


# --- the runtime LoRA API -------------------------------------------------------------------------------------


async def test_load_list_unload(vllm: FakeVLLM, client: httpx.AsyncClient, tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "a")
    await vllm_api.load_adapter(vllm.base_url, "greeter", path, client=client)
    assert vllm.loaded() == {"greeter": str(path)}
    assert await vllm_api.listed(vllm.base_url, "greeter", client=client)
    card = await vllm_api.adapter_card(vllm.base_url, "greeter", client=client)
    assert card is not None and card["parent"] == vllm.base_model and card["root"] == str(path)
    assert not await vllm_api.listed(vllm.base_url, vllm.base_model, client=client)  # the base has no parent
    await vllm_api.unload_adapter(vllm.base_url, "greeter", client=client)
    assert vllm.loaded() == {} and not await vllm_api.listed(vllm.base_url, "greeter", client=client)


async def test_a_path_without_an_adapter(vllm: FakeVLLM, client: httpx.AsyncClient, tmp_path: Path) -> None:
    kind, message = await kind_of(vllm_api.load_adapter(vllm.base_url, "x", tmp_path / "nowhere", client=client))
    assert kind == "bad_path" and str(tmp_path / "nowhere") in message and "vLLM's machine" in message
    assert vllm.loaded() == {}


async def test_a_name_already_loaded(vllm: FakeVLLM, client: httpx.AsyncClient, tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "a")
    await vllm_api.load_adapter(vllm.base_url, "twice", path, client=client)
    kind, message = await kind_of(vllm_api.load_adapter(vllm.base_url, "twice", path, client=client))
    assert kind == "already_loaded" and "'twice'" in message
    await vllm_api.unload_adapter(vllm.base_url, "twice", client=client)


async def test_unloading_a_name_not_loaded(vllm: FakeVLLM, client: httpx.AsyncClient) -> None:
    kind, message = await kind_of(vllm_api.unload_adapter(vllm.base_url, "ghost", client=client))
    assert kind == "not_loaded" and "'ghost'" in message


async def test_a_request_vllm_refuses(vllm: FakeVLLM, client: httpx.AsyncClient) -> None:
    kind, message = await kind_of(vllm_api.load_adapter(vllm.base_url, "x", "", client=client))
    assert kind == "refused" and "HTTP 400" in message and "must be provided" in message


async def test_vllm_without_runtime_updates(client: httpx.AsyncClient, tmp_path: Path) -> None:
    with running(runtime_updates=False) as fake:
        kind, message = await kind_of(vllm_api.load_adapter(fake.base_url, "x", make_adapter(tmp_path), client=client))
        assert kind == "runtime_off" and "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in message
        assert "serve-command" in message
        kind, _ = await kind_of(vllm_api.unload_adapter(fake.base_url, "x", client=client))
        assert kind == "runtime_off"


async def test_vllm_not_listening(client: httpx.AsyncClient, tmp_path: Path) -> None:
    base = f"http://user:hunter2-secret@127.0.0.1:{free_port()}/v1"
    kind, message = await kind_of(vllm_api.load_adapter(base, "x", tmp_path, api_key=VLLM_KEY, client=client))
    assert kind == "unreachable" and "cannot reach vLLM at http://127.0.0.1" in message
    assert "hunter2" not in message and VLLM_KEY not in message


async def test_a_key_vllm_refuses_is_never_shown(client: httpx.AsyncClient, tmp_path: Path) -> None:
    path = make_adapter(tmp_path / "a")
    with running(api_key=VLLM_KEY) as fake:
        wrong = "sk-canary-wrong-key-11223344"
        kind, message = await kind_of(vllm_api.load_adapter(fake.base_url, "k", path, api_key=wrong, client=client))
        assert kind == "unauthorized" and "api_key" in message and wrong not in message
        kind, _ = await kind_of(vllm_api.listed(fake.base_url, "k", client=client))
        assert kind == "unauthorized"
        await vllm_api.load_adapter(fake.base_url, "k", path, api_key=VLLM_KEY, client=client)
        assert await vllm_api.listed(fake.base_url, "k", api_key=VLLM_KEY, client=client)
        await vllm_api.unload_adapter(fake.base_url, "k", api_key=VLLM_KEY, client=client)


async def test_error_messages_never_carry_the_key(client: httpx.AsyncClient, tmp_path: Path) -> None:
    with running(api_key=VLLM_KEY) as fake:
        where = tmp_path / f"no-{VLLM_KEY}"
        _, message = await kind_of(vllm_api.load_adapter(fake.base_url, "k", where, api_key=VLLM_KEY, client=client))
        assert VLLM_KEY not in message and "***" in message


# --- the vLLM command -----------------------------------------------------------------------------------------


def test_serve_command_argv(tmp_path: Path) -> None:
    argv = vllm_api.serve_command(tmp_path / "base", {"greeter": tmp_path / "a"}, max_lora_rank=16)
    assert argv == [
        "python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tmp_path / "base"),
        "--enable-lora",
        "--max-lora-rank",
        "16",
        "--lora-modules",
        f"greeter={tmp_path / 'a'}",
    ]
    both = vllm_api.serve_command("/m", {"a": "/x", "b": "/y"}, template_file="/t.jinja", python="/v/bin/python")
    assert both[0] == "/v/bin/python" and both[-5:] == ["--lora-modules", "a=/x", "b=/y", "--chat-template", "/t.jinja"]
    assert "--lora-modules" not in vllm_api.serve_command("/m", {})


@pytest.mark.parametrize("name", ["a=b", "two words", "../up", "-flag"])
def test_serve_command_refuses_names_that_are_not_plain(name: str) -> None:
    with pytest.raises(StoreError):
        vllm_api.serve_command("/m", {name: "/x"})


def test_the_rank_limit_is_one_vllm_accepts() -> None:
    assert [vllm_api.rank_limit(r) for r in (1, 8, 9, 64, 300, 512)] == [8, 8, 16, 64, 320, 512]
    with pytest.raises(DeployError):
        vllm_api.rank_limit(513)


# --- what deploy checks before touching vLLM ------------------------------------------------------------------


@pytest.mark.parametrize(("status", "method"), [("running", "lora"), ("failed", "lora"), ("succeeded", "full")])
def test_only_a_succeeded_lora_job_has_an_adapter(tmp_path: Path, status: JobStatus, method: Method) -> None:
    job = add_job(TrainerStore(tmp_path), "j", status=status, method=method)
    with pytest.raises(DeployError) as caught:
        deploy.adapter_folder(job)
    assert caught.value.kind == "not_ready" and caught.value.usage


def test_an_adapter_with_files_missing(tmp_path: Path) -> None:
    job = add_job(TrainerStore(tmp_path), "j")
    (Path(adapter_path(job)) / "adapter_model.safetensors").unlink()
    with pytest.raises(DeployError, match=r"adapter_model\.safetensors missing"):
        deploy.adapter_folder(job)


def test_upstream_of_fills_the_preset_url() -> None:
    cfg = GatewayConfig.model_validate(
        {"providers": {"local": {"type": "vllm"}, "keyed": {"type": "vllm", "api_key": "k"}}}
    )
    assert deploy.upstream_of(cfg, "local") == deploy.Upstream("local", "http://127.0.0.1:8000/v1", None)
    assert deploy.upstream_of(cfg, "keyed").api_key == "k"
    with pytest.raises(DeployError, match="known: keyed, local") as caught:
        deploy.upstream_of(cfg, "nope")
    assert caught.value.usage


# --- deploy and undeploy: a real PostgreSQL and a real gateway ------------------------------------------------


CONFIG = """
database_url: "{database}"
data_dir: "{data}"
metering: {{flush_interval: 0.1}}
providers:
  vllm: {{type: vllm, base_url: "{vllm}"}}
models:
  base: {{routes: [{{provider: vllm, model: tiny-base}}], max_retries: 0}}
keys:
  - {{name: app, key: "{key}"}}
trainer:
  base_models: {{tiny: "{data}/base"}}
"""


@dataclass
class Stack:
    fake: FakeVLLM
    gw: Gateway
    database: str
    config_path: Path
    cfg: GatewayConfig
    store: TrainerStore

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "gateway.cli", "trainer", *args, "--config", str(self.config_path)]
        return subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=60, cwd=self.config_path.parent
        )


@pytest.fixture(scope="module")
def stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("deploy")
    database = asyncio.run(create_database(database_url))
    asyncio.run(upgrade(database))
    with running() as fake:
        text = CONFIG.format(database=database, data=tmp / "data", vllm=fake.base_url, key=FULL_KEY)
        gw = start_gateway(text, tmp, ENV)
        path = tmp / "gateway.yaml"
        cfg = load_config(path, provider_types(), needs_base_url=NEEDS_BASE_URL)
        try:
            yield Stack(fake, gw, database, path, cfg, TrainerStore(tmp / "data" / "trainer"))
        finally:
            stop_gateway(gw)
    asyncio.run(drop_database(database_url, database))


@pytest.fixture
async def gateway(stack: Stack) -> AsyncIterator[deploy.Gateway]:
    engine = create_engine(stack.database)
    try:
        yield deploy.Gateway(stack.store, engine, stack.cfg)
    finally:
        await engine.dispose()


async def answers(client: openai.AsyncOpenAI, alias: str) -> bool:
    try:
        await client.chat.completions.create(model=alias, messages=USER)
    except openai.NotFoundError:
        return False
    return True


async def unknown(client: openai.AsyncOpenAI, alias: str) -> bool:
    """True once the gateway answers 404 model_not_found: it no longer knows the alias."""
    try:
        await client.chat.completions.create(model=alias, messages=USER)
    except openai.NotFoundError as exc:
        return exc.code == "model_not_found"
    return False


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> bool:
    """Poll another process (the gateway applies a new config version within a second): no event crosses over."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_deploy_serves_the_alias_and_undeploy_removes_it(
    stack: Stack, gateway: deploy.Gateway, client: httpx.AsyncClient
) -> None:
    job = add_job(stack.store, "greeter")
    sdk = stack.gw.async_client(FULL_KEY)
    assert not await answers(sdk, "greeter-chat")
    done = await deploy.deploy(job, "vllm", stack.fake.base_url, "greeter-chat", gateway=gateway, client=client)
    assert done.deployed is not None and stack.store.job("greeter").deployed == done.deployed
    assert {k: done.deployed[k] for k in ("provider", "alias", "adapter_name")} == {
        "provider": "vllm",
        "alias": "greeter-chat",
        "adapter_name": "greeter",
    }
    assert stack.fake.loaded() == {"greeter": adapter_path(job)}
    assert await eventually(lambda: answers(sdk, "greeter-chat")), stack.gw.log_text()[-2000:]

    reply = await sdk.chat.completions.create(model="greeter-chat", messages=USER)
    assert reply.choices[0].message.content == "echo: hello adapter"
    chunks = [c async for c in await sdk.chat.completions.create(model="greeter-chat", messages=USER, stream=True)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == "echo: hello adapter"
    assert len(stack.fake.recorder.bodies_for("greeter")) >= 2  # vLLM was asked for the adapter by its name

    audit = await repo.list_audit(gateway.engine, 5, object_type="model")
    assert (audit[0]["action"], audit[0]["actor"], audit[0]["object_id"]) == ("create", "trainer", "greeter-chat")
    assert audit[0]["after"]["spec"]["routes"] == [{"provider": "vllm", "model": "greeter"}]

    gone = await deploy.undeploy(stack.store.job("greeter"), stack.fake.base_url, gateway=gateway, client=client)
    assert gone.deployed is None and stack.store.job("greeter").deployed is None
    assert "greeter" not in stack.fake.loaded()
    assert await unknown(sdk, "greeter-chat")  # at once: undeploy unloaded only after the gateway dropped the alias
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.chat.completions.create(model="greeter-chat", messages=USER)
    assert caught.value.code == "model_not_found"
    audit = await repo.list_audit(gateway.engine, 1, object_type="model")
    assert (audit[0]["action"], audit[0]["before"]["alias"]) == ("delete", "greeter-chat")


async def test_deploying_again_is_harmless(stack: Stack, gateway: deploy.Gateway, client: httpx.AsyncClient) -> None:
    job = add_job(stack.store, "again")
    first = await deploy.deploy(job, "vllm", stack.fake.base_url, "again-chat", gateway=gateway, client=client)
    second = await deploy.deploy(first, "vllm", stack.fake.base_url, "again-chat", gateway=gateway, client=client)
    assert second.deployed is not None and stack.fake.loaded()["again"] == adapter_path(job)
    audit = await repo.list_audit(gateway.engine, 1, object_type="model")
    assert audit[0]["action"] == "update"
    for alias, name in (("other-chat", None), ("again-chat", "renamed")):
        with pytest.raises(DeployError, match="undeploy it first") as caught:
            await deploy.deploy(
                second, "vllm", stack.fake.base_url, alias, gateway=gateway, client=client, adapter_name=name
            )
        assert caught.value.kind == "conflict"
    await deploy.undeploy(second, stack.fake.base_url, gateway=gateway, client=client)
    assert "again" not in stack.fake.loaded()


async def test_an_alias_that_cannot_be_written_unloads_the_adapter_again(
    stack: Stack, gateway: deploy.Gateway, client: httpx.AsyncClient
) -> None:
    job = add_job(stack.store, "rollback")
    async with gateway.engine.begin() as conn:
        await repo.create_model(conn, "taken", {"routes": [{"provider": "vllm", "model": "tiny-base"}]})
    cases = [("vllm", "base", "config file"), ("vllm", "taken", "--replace"), ("ghost", "ghost-chat", "ghost")]
    for provider, alias, says in cases:
        with pytest.raises(DeployError, match=says):
            await deploy.deploy(job, provider, stack.fake.base_url, alias, gateway=gateway, client=client)
        assert "rollback" not in stack.fake.loaded() and stack.store.job("rollback").deployed is None
    done = await deploy.deploy(
        job, "vllm", stack.fake.base_url, "taken", gateway=gateway, client=client, replace=True, adapter_name="rb"
    )
    assert done.deployed is not None and stack.fake.loaded()["rb"] == adapter_path(job)
    await deploy.undeploy(done, stack.fake.base_url, gateway=gateway, client=client)
    assert "taken" not in {m["alias"] for m in await repo.list_models(gateway.engine)}
    assert "rb" not in stack.fake.loaded()


async def test_a_job_not_ready_never_reaches_vllm(
    stack: Stack, gateway: deploy.Gateway, client: httpx.AsyncClient
) -> None:
    job = add_job(stack.store, "unready", status="failed")
    stack.fake.recorder.clear()
    with pytest.raises(DeployError, match="only a succeeded job"):
        await deploy.deploy(job, "vllm", stack.fake.base_url, "unready", gateway=gateway, client=client)
    ready = add_job(stack.store, "ready")
    with pytest.raises(DeployError, match="is not a model alias"):
        await deploy.deploy(ready, "vllm", stack.fake.base_url, "two words", gateway=gateway, client=client)
    assert stack.fake.recorder.requests == []
    with pytest.raises(DeployError, match="not deployed"):
        await deploy.undeploy(job, stack.fake.base_url, gateway=gateway, client=client)


async def test_undeploy_after_the_alias_was_removed_elsewhere(
    stack: Stack, gateway: deploy.Gateway, client: httpx.AsyncClient
) -> None:
    job = add_job(stack.store, "orphan")
    done = await deploy.deploy(job, "vllm", stack.fake.base_url, "orphan-chat", gateway=gateway, client=client)
    async with gateway.engine.begin() as conn:
        await repo.delete_model(conn, (await repo.get_model(conn, "orphan-chat"))["id"])
    await deploy.undeploy(done, stack.fake.base_url, gateway=gateway, client=client)
    assert "orphan" not in stack.fake.loaded() and stack.store.job("orphan").deployed is None


def test_the_cli_deploys_and_undeploys(stack: Stack) -> None:
    add_job(stack.store, "cli-job")
    done = stack.cli("deploy", "cli-job", "--provider", "vllm", "--alias", "cli-chat")
    assert done.returncode == 0, done.stderr
    assert "cli-job: serving as model 'cli-chat'" in done.stdout
    sdk = stack.gw.client(FULL_KEY)

    def served() -> bool:
        try:
            sdk.chat.completions.create(model="cli-chat", messages=USER)
        except openai.NotFoundError:
            return False
        return True

    assert wait_until(served, 10)
    assert stack.fake.recorder.bodies_for("cli-job")
    gone = stack.cli("undeploy", "cli-job")
    assert gone.returncode == 0, gone.stderr
    with pytest.raises(openai.NotFoundError) as caught:  # at once: undeploy waited for the gateway before unloading
        sdk.chat.completions.create(model="cli-chat", messages=USER)
    assert caught.value.code == "model_not_found" and "cli-job" not in stack.fake.loaded()
    assert "cli-chat" in gone.stdout


def test_cli_errors_are_one_line_with_the_usage_status(stack: Stack) -> None:
    add_job(stack.store, "cli-bad")
    cases = [
        (("deploy", "no-such-job", "--provider", "vllm", "--alias", "a"), 2, "no job named"),
        (("deploy", "cli-bad", "--provider", "nope", "--alias", "a"), 2, "no provider named 'nope'"),
        (("undeploy", "cli-bad"), 2, "is not deployed"),
    ]
    for args, status, says in cases:
        done = stack.cli(*args)
        assert done.returncode == status and says in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1


# --- the real thing on the tiny model: the chat template check, export, the dashboard -------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2 model, built once in .venv-trainer by `python -m trainer.tiny`."""
    assert (VENV / "bin" / "llamafactory-cli").exists(), "run `make trainer-env` (creates .venv-trainer)"
    out = tmp_path_factory.mktemp("tiny") / "model"
    command = [str(VENV / "bin" / "python"), "-m", "trainer.tiny", str(out)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    return out


PEFT_ADAPTER = """
import sys
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
get_peft_model(model, lora).save_pretrained(sys.argv[2])
"""


@pytest.fixture(scope="module")
def tiny_service(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainerService:
    """A trainer on the tiny model whose job `tuned` holds a real (untrained) LoRA adapter made with peft."""
    data = tmp_path_factory.mktemp("tiny-jobs") / "data"
    service = TrainerService(
        TrainerStore(data / "trainer"), TrainerConfig(venv=str(VENV), base_models={"tiny": str(tiny_model)})
    )
    job = add_job(service.store, "tuned")
    output = Path(adapter_path(job))
    for file in output.iterdir():
        file.unlink()
    command = [str(VENV / "bin" / "python"), "-c", PEFT_ADAPTER, str(tiny_model), str(output)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return service


async def test_the_tiny_tokenizer_agrees_with_qwen_and_not_with_default(
    tiny_service: TrainerService, tiny_model: Path, tmp_path: Path
) -> None:
    argv, notes = await deploy.serve_command_for(tiny_service, "tuned")
    assert "--chat-template" not in argv and argv[argv.index("--lora-modules") + 1].startswith("tuned=/")
    assert argv[argv.index("--max-lora-rank") + 1] == "8" and any("VLLM_ALLOW_RUNTIME" in n for n in notes)

    written = await vllm_api.check_template(VENV, tiny_model, "default", tmp_path)
    assert written == tmp_path / "chat_template.jinja" and "Human: " in written.read_text(encoding="utf-8")
    # the written template, as the tokenizer's own (what --chat-template makes vLLM use), now agrees with `default`
    retemplated = tmp_path / "model"
    retemplated.mkdir()
    for file in tiny_model.iterdir():
        (retemplated / file.name).write_bytes(file.read_bytes())
    (retemplated / "chat_template.jinja").write_bytes(written.read_bytes())
    (tmp_path / "job").mkdir()
    assert await vllm_api.check_template(VENV, retemplated, "default", tmp_path / "job") is None


async def test_export_merges_the_adapter_into_a_standalone_model(tiny_service: TrainerService) -> None:
    job = tiny_service.store.job("tuned")
    line = await deploy.export_named(tiny_service, "tuned")
    merged = tiny_service.store.job_dir("tuned") / "merged"
    assert line == f"tuned: merged model in {merged}"
    assert (merged / "model.safetensors").stat().st_size > 0 and (merged / "config.json").is_file()
    assert (merged / "chat_template.jinja").is_file()
    exported = (tiny_service.store.job_dir("tuned") / "export.yaml").read_text(encoding="utf-8")
    assert f"adapter_name_or_path: {adapter_path(job)}" in exported


async def test_a_failed_export_says_why(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    cli = venv / "bin" / "llamafactory-cli"
    cli.write_text('#!/bin/sh\necho "loading $2"\necho "ValueError: the adapter does not fit" >&2\nexit 4\n')
    cli.chmod(0o755)
    job = add_job(TrainerStore(tmp_path / "trainer"), "broken")
    with pytest.raises(DeployError) as caught:
        await deploy.export(job, venv, base_model_dir="/m", job_dir=tmp_path)
    assert caught.value.kind == "export_failed" and "exit status 4" in str(caught.value)
    assert "ValueError: the adapter does not fit" in str(caught.value)


def test_serve_command_and_dashboard_from_the_cli(tiny_service: TrainerService, tmp_path: Path) -> None:
    port, base = free_port(), tiny_service.config.base_models["tiny"]
    config = tmp_path / "gateway.yaml"
    trainer = f"{{venv: '{VENV}', base_models: {{tiny: '{base}'}}, dashboard_port: {port}}}"
    config.write_text(f"data_dir: '{tiny_service.store.root.parent}'\ntrainer: {trainer}\n")
    command = [sys.executable, "-m", "gateway.cli", "trainer"]
    serve = [*command, "serve-command", "tuned", "--chat-template", "/t.jinja", "--config", str(config)]
    shown = subprocess.run(serve, check=False, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    output = str(tiny_service.store.job_dir("tuned") / "output")
    assert shlex.split(shown.stdout) == vllm_api.serve_command(base, {"tuned": output}, template_file="/t.jinja")

    env = {**os.environ, "SWITCHYARD_CANARY_SECRET": "must-not-reach-the-dashboard"}
    with subprocess.Popen([*command, "dashboard", "--config", str(config)], env=env, stdout=subprocess.PIPE) as board:
        try:
            assert wait_until(lambda: _status(f"http://127.0.0.1:{port}/") == 200, 60), "no dashboard"
            child_env = _environ(_children(board.pid)[0])
        finally:
            board.send_signal(signal.SIGINT)
            board.wait(20)
    assert b"SWITCHYARD_CANARY_SECRET" not in child_env and b"SWANLAB_MODE=local" in child_env
    assert board.returncode == 0 and tiny_service.swanlab_dir.is_dir()


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=1).status_code
    except httpx.TransportError:
        return 0


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()
