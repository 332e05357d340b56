"""A real LoRA fine-tune from the terminal: `switchyard trainer datasets add` then `run` on a tiny model built
locally (random weights, a tokenizer trained here, no hub), through the trainer's own queue and scheduler and
LLaMA-Factory in `.venv-trainer`; then the job's record, its adapter files and SwanLab's local run."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import FULL_KEY, KEEP, start_gateway, stop_gateway, wait_until
from tests.fakes.openai_upstream import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
TRAINER_PYTHON = ROOT / ".venv-trainer" / "bin" / "python"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-model")
    subprocess.run([str(TRAINER_PYTHON), "-m", "trainer.tiny", str(folder)], cwd=ROOT, check=True, timeout=300)
    return folder


@pytest.fixture
def config(tmp_path: Path, tiny_model: Path) -> Iterator[Path]:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\ntrainer: {{base_models: {{tiny: {tiny_model}}}}}\n")
    yield path


def switchyard(config: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway.cli", "trainer", *args, "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)


def test_a_lora_sft_runs_from_the_cli_to_an_adapter(config: Path, tmp_path: Path) -> None:
    rows = [{"instruction": f"Say the number {i}", "input": "", "output": f"The number is {i}."} for i in range(32)]
    data = tmp_path / "numbers.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    added = switchyard(config, "datasets", "add", "numbers", str(data))
    assert added.returncode == 0, added.stderr
    assert "32 rows, format alpaca" in added.stdout

    ran = switchyard(
        config, "run", "--name", "numbers-lora", "--base-model", "tiny", "--dataset", "numbers",
        "--max-steps", "4", "--cutoff-len", "64", "--lora-rank", "4",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "numbers-lora: step 4/4 loss" in ran.stdout
    assert ran.stdout.strip().endswith("numbers-lora: succeeded")

    jobs = json.loads(switchyard(config, "jobs").stdout)
    assert jobs[0]["name"] == "numbers-lora"
    assert jobs[0]["status"] == "succeeded"
    assert jobs[0]["progress"] == 100
    assert isinstance(jobs[0]["loss"], float)
    job_dir = tmp_path / "data" / "trainer" / "jobs" / "numbers-lora"
    record = json.loads((job_dir / "job.json").read_text())
    assert {"adapter_model.safetensors", "adapter_config.json"} <= set(record["adapter"]["files"])
    assert json.loads((job_dir / "output" / "adapter_config.json").read_text())["r"] == 4
    assert list((tmp_path / "data" / "trainer" / "swanlab").glob("run-*")), "no SwanLab run recorded"
    assert "train_loss" in switchyard(config, "logs", "numbers-lora").stdout


def test_bad_input_is_a_one_line_error(config: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "q"}\nnot json\n')
    added = switchyard(config, "datasets", "add", "bad", str(bad))
    assert added.returncode == 1
    assert "row 1" in added.stderr
    assert "row 2" in added.stderr
    assert "Traceback" not in added.stderr
    unknown = switchyard(config, "run", "--name", "j", "--base-model", "nope", "--dataset", "bad")
    assert unknown.returncode == 2
    assert "base_model" in unknown.stderr
    shell = switchyard(config, "run", "--name", "x;rm -rf /", "--base-model", "tiny", "--dataset", "d")
    assert shell.returncode == 2
    assert "Traceback" not in shell.stderr


def test_logged_traffic_becomes_a_messages_dataset(fake_upstream: FakeOpenAI, tmp_path: Path, tiny_model: Path) -> None:
    alias = f"logged-{uuid.uuid4().hex[:8]}"
    text = (
        f"data_dir: {tmp_path / 'data'}\nmetering: {{flush_interval: 0.1}}\n"
        f'providers:\n  fake: {{type: openai, base_url: "http://127.0.0.1:{fake_upstream.port}/v1", api_key: x}}\n'
        f"models:\n  {alias}: {{routes: [{{provider: fake, model: echo-up}}], log_requests: true, {KEEP}}}\n"
        f'keys:\n  - {{name: trainer-ledger, key: "{FULL_KEY}"}}\n'
    )
    gw = start_gateway(text, tmp_path)
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=FULL_KEY, max_retries=0)
        for question in ("What is our refund window?", "How do I reset my badge?"):
            client.chat.completions.create(model=alias, messages=[{"role": "user", "content": question}])
        config = tmp_path / "gateway.yaml"

        def exported() -> bool:
            got = switchyard(config, "datasets", "from-ledger", "traffic", "--alias", alias, "--since", "1h")
            return got.returncode == 0

        assert wait_until(exported, timeout=60)
    finally:
        stop_gateway(gw)
    shown = json.loads(switchyard(config, "datasets", "show", "traffic").stdout)
    assert shown["format"] == "messages"
    assert shown["rows"] == 2
    first = shown["preview"][0]["messages"]
    assert first[0] == {"role": "user", "content": "What is our refund window?"}
    assert first[-1] == {"role": "assistant", "content": "echo: What is our refund window?"}
