"""The trainer's engine layer: LLaMA-Factory configs, the log tail, the child process, and real runs.

The pure tests are fast. The real ones run LLaMA-Factory from .venv-trainer (built by `make trainer-env`, which
`make test` runs first) on a tiny random model built offline by `trainer.tiny`: one LoRA SFT of 10 steps,
watched live through trainer_log.jsonl, and one run cancelled after its first logged step.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainer import datasets, process
from trainer import llamafactory as lf
from trainer.metrics import LogTail

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-trainer"
METRIC_WAIT_S = 180.0
"""Upper bound for the first logged step (LLaMA-Factory's imports take ~10 s here): a hang fails, not waits."""


def job(tmp: Path, **overrides: Any) -> dict[str, Any]:
    """A valid job for train_config, paths under `tmp`."""
    base = {
        "model": tmp / "model",
        "dataset": "toy",
        "dataset_dir": tmp / "data",
        "output_dir": tmp / "out",
        "swanlab_logdir": tmp / "swanlog",
    }
    return base | overrides


# --- train_config -------------------------------------------------------------------------------------------


def test_sft_lora_on_cpu_has_the_working_keys(tmp_path: Path) -> None:
    config = lf.train_config(job(tmp_path))
    assert config["stage"] == "sft" and config["do_train"] is True
    assert config["finetuning_type"] == "lora" and config["lora_target"] == "all"
    assert (config["lora_rank"], config["lora_alpha"], config["lora_dropout"]) == (8, 16, 0.05)
    assert config["template"] == "qwen" and config["trust_remote_code"] is False
    assert config["use_cpu"] is True and config["bf16"] is False
    assert config["logging_steps"] == 1 and config["report_to"] == "none"
    assert config["use_swanlab"] is True and config["swanlab_mode"] == "local"
    assert config["swanlab_logdir"] == str(tmp_path / "swanlog")
    assert config["swanlab_project"] == "switchyard" and config["swanlab_run_name"] == "out"
    assert config["dataset"] == "toy" and config["dataset_dir"] == str(tmp_path / "data")
    assert config["model_name_or_path"] == str(tmp_path / "model") and config["output_dir"] == str(tmp_path / "out")
    assert config["num_train_epochs"] == 3.0 and "max_steps" not in config
    assert not {"quantization_bit", "val_size", "eval_strategy", "pref_beta"} & set(config)


def test_hyper_parameters_pass_through(tmp_path: Path) -> None:
    hyper = {
        "lora_rank": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "lora_target": "q_proj,v_proj",
        "learning_rate": 5e-4,
        "max_steps": 7,
        "cutoff_len": 256,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 3,
        "swanlab_project": "team-a",
        "swanlab_run_name": "job-42",
    }
    config = lf.train_config(job(tmp_path, **hyper))
    assert {key: config[key] for key in hyper} == hyper
    assert "num_train_epochs" not in config


def test_eval_split_adds_evaluation_keys(tmp_path: Path) -> None:
    config = lf.train_config(job(tmp_path, val_size=0.1, eval_steps=5, per_device_train_batch_size=2))
    assert config["val_size"] == 0.1 and config["eval_strategy"] == "steps" and config["eval_steps"] == 5
    assert config["per_device_eval_batch_size"] == 2


@pytest.mark.parametrize("method", ["freeze", "full"])
def test_freeze_and_full_carry_no_lora_keys(tmp_path: Path, method: str) -> None:
    config = lf.train_config(job(tmp_path, finetuning_type=method))
    assert config["finetuning_type"] == method
    assert not [key for key in config if key.startswith("lora_")]


def test_dpo_and_pt_stages(tmp_path: Path) -> None:
    dpo = lf.train_config(job(tmp_path, stage="dpo", pref_beta=0.2))
    assert dpo["stage"] == "dpo" and dpo["pref_beta"] == 0.2 and dpo["pref_loss"] == "sigmoid"
    assert lf.train_config(job(tmp_path, stage="pt"))["stage"] == "pt"


def test_qlora_needs_a_gpu(tmp_path: Path) -> None:
    with pytest.raises(lf.ConfigError, match="GPU"):
        lf.train_config(job(tmp_path, finetuning_type="qlora"))
    config = lf.train_config(job(tmp_path, finetuning_type="qlora", gpu=True))
    assert config["finetuning_type"] == "lora" and config["quantization_bit"] == 4
    assert config["bf16"] is True and "use_cpu" not in config


@pytest.mark.parametrize(
    "overrides",
    [
        {"stage": "ppo"},
        {"finetuning_type": "oft"},
        {"template": "qwen; rm -rf /"},
        {"template": "../../etc/passwd"},
        {"dataset": "toy $(id)"},
        {"lora_target": "all --deepspeed x"},
        {"swanlab_run_name": "a/b"},
        {"learning_rate": -1.0},
        {"learning_rate": float("nan")},
        {"lora_rank": 8.5},
        {"lora_rank": True},
        {"max_steps": "10"},
        {"extra_arg": 1},
    ],
)
def test_bad_jobs_are_refused(tmp_path: Path, overrides: dict[str, Any]) -> None:
    with pytest.raises(lf.ConfigError):
        lf.train_config(job(tmp_path, **overrides))


def test_missing_keys_are_refused(tmp_path: Path) -> None:
    incomplete = job(tmp_path)
    del incomplete["output_dir"]
    with pytest.raises(lf.ConfigError, match="output_dir"):
        lf.train_config(incomplete)


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = lf.train_config(job(tmp_path, val_size=0.2, stage="dpo"))
    path = lf.write_yaml(tmp_path / "train.yaml", config)
    text = path.read_text(encoding="utf-8")
    assert yaml.safe_load(text) == config
    assert "!!python" not in text and text.startswith("model_name_or_path:")


def test_export_config(tmp_path: Path) -> None:
    config = lf.export_config(tmp_path / "model", tmp_path / "out", tmp_path / "merged", "qwen")
    assert config["adapter_name_or_path"] == str(tmp_path / "out") and config["export_dir"] == str(tmp_path / "merged")
    assert config["finetuning_type"] == "lora" and config["export_device"] == "cpu"
    assert config["export_legacy_format"] is False and config["trust_remote_code"] is False


def test_argv_is_the_venvs_cli() -> None:
    venv = Path("/srv/sy/.venv-trainer")
    assert lf.argv(venv, "/jobs/1/train.yaml") == [str(venv / "bin/llamafactory-cli"), "train", "/jobs/1/train.yaml"]
    assert lf.argv(venv, "x.yaml", "export")[1] == "export"
    with pytest.raises(lf.ConfigError):
        lf.argv(venv, "x.yaml", "webui")


# --- LogTail --------------------------------------------------------------------------------------------------

STEP = {"current_steps": 1, "total_steps": 10, "loss": 6.2, "lr": 0.001, "epoch": 0.06, "percentage": 10.0}


def test_log_tail_keeps_a_partial_line_until_complete(tmp_path: Path) -> None:
    path = tmp_path / "trainer_log.jsonl"
    tail = LogTail(path)
    assert tail.read() == []  # not created yet
    line = json.dumps(STEP | {"elapsed_time": "0:00:01", "remaining_time": "0:00:09"}).encode() + b"\n"
    path.write_bytes(line[:20])
    assert tail.read() == []
    with path.open("ab") as handle:
        handle.write(line[20:] + line[:5])
    (metric,) = tail.read()
    assert metric["current_steps"] == 1 and metric["total_steps"] == 10 and metric["loss"] == 6.2
    assert metric["lr"] == 0.001 and metric["percentage"] == 10.0 and metric["remaining_time"] == "0:00:09"
    assert metric["eval_loss"] is None
    assert tail.read() == []
    with path.open("ab") as handle:
        handle.write(line[5:])
    assert [m["current_steps"] for m in tail.read()] == [1]


def test_log_tail_reads_several_lines_and_skips_garbage(tmp_path: Path) -> None:
    path = tmp_path / "trainer_log.jsonl"
    rows = [
        json.dumps({"current_steps": 2, "total_steps": 4, "loss": 5.0, "learning_rate": 0.5}),
        "not json",
        "[1, 2]",
        "",
        json.dumps({"current_steps": 2, "total_steps": 4, "eval_loss": 4.5, "loss": True}),
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    first, second = LogTail(path).read()
    assert first["lr"] == 0.5 and first["loss"] == 5.0
    assert second["eval_loss"] == 4.5 and second["loss"] is None and second["lr"] is None


def test_log_tail_starts_over_when_the_file_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "trainer_log.jsonl"
    path.write_text(json.dumps(STEP | {"current_steps": 9}) * 3 + "\n", encoding="utf-8")
    tail = LogTail(path)
    assert len(tail.read()) == 0  # three objects on one line: not a JSON object
    path.write_text(json.dumps(STEP) + "\n", encoding="utf-8")
    assert [m["current_steps"] for m in tail.read()] == [1]


# --- process, with stand-in children --------------------------------------------------------------------------


def test_outcome_maps_exit_codes() -> None:
    assert process.outcome(0, cancelled=False) == "succeeded"
    assert process.outcome(1, cancelled=False) == "failed"
    assert process.outcome(-9, cancelled=False) == "failed"
    assert process.outcome(-15, cancelled=True) == "cancelled"
    assert process.outcome(0, cancelled=True) == "cancelled"


def test_child_env_is_built_from_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-provider-key")
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", "postgresql://canary")
    env = process.child_env(VENV, tmp_path, cuda_devices="1", threads=2, extra={"HF_HOME": "/x"})
    assert "canary" not in repr(env)
    assert env["PATH"].startswith(f"{VENV}/bin:") and env["HOME"] == str(tmp_path)
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1" and env["SWANLAB_MODE"] == "local"
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["OMP_NUM_THREADS"] == "2" and env["HF_HOME"] == "/x"
    assert process.child_env(VENV, tmp_path)["CUDA_VISIBLE_DEVICES"] == ""


async def test_start_needs_an_absolute_program(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="absolute"):
        await process.start(["sleep", "1"], log_path=tmp_path / "log", cwd=tmp_path, env={})


async def test_wall_clock_limit_kills_the_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-provider-key")
    script = "sleep 60 & echo started; wait"
    env = process.child_env(VENV, tmp_path)
    run = await process.start(["/bin/sh", "-c", script], log_path=tmp_path / "log", cwd=tmp_path, env=env)
    environ = Path(f"/proc/{run.pid}/environ").read_bytes()
    assert b"canary" not in environ and b"SWANLAB_MODE=local" in environ
    assert process.alive(run.pid) and os.getpgid(run.pid) == run.pgid == run.pid
    assert await run.wait(limit_s=0.5, grace=2) == "failed"
    assert run.timed_out and not run.cancelled and not process.alive(run.pid)
    assert not process.group_alive(run.pgid)
    with pytest.raises(ProcessLookupError):
        os.killpg(run.pgid, 0)


async def test_sigkill_after_the_grace_period(tmp_path: Path) -> None:
    script = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
    log = tmp_path / "log"
    run = await process.start(
        ["/bin/sh", "-c", script], log_path=log, cwd=tmp_path, env=process.child_env(VENV, tmp_path)
    )
    async with asyncio.timeout(10):
        while b"ready" not in log.read_bytes():
            await asyncio.sleep(0.02)
    assert await run.cancel(grace=0.3) == "cancelled"
    assert run.returncode == -9
    assert not process.group_alive(run.pgid)


async def test_cancel_after_exit_keeps_the_real_status(tmp_path: Path) -> None:
    run = await process.start(["/bin/true"], log_path=tmp_path / "log", cwd=tmp_path, env={})
    assert await run.wait() == "succeeded"
    assert await run.cancel() == "succeeded" and run.status() == "succeeded"


# --- real LLaMA-Factory runs on the tiny model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2 model, built once in .venv-trainer by `python -m trainer.tiny`."""
    assert (VENV / "bin" / "llamafactory-cli").exists(), "run `make trainer-env` (creates .venv-trainer)"
    out = tmp_path_factory.mktemp("tiny") / "model"
    command = [str(VENV / "bin" / "python"), "-m", "trainer.tiny", str(out)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    assert "im_start" in (out / "chat_template.jinja").read_text(encoding="utf-8")
    return out


def prepare_job(tmp: Path, model: Path, max_steps: int) -> Path:
    """64 alpaca rows, their dataset_info.json, and the train YAML; returns the YAML's path."""
    data = tmp / "data"
    data.mkdir()
    rows = [{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": str(2 * i + 1)} for i in range(64)]
    datasets.write_dataset(data, "toy", rows, "alpaca", preference=False)
    info = datasets.dataset_info_entry("toy", "toy.jsonl", "alpaca", preference=False)
    (data / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    hyper = {"max_steps": max_steps, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1}
    config = lf.train_config(job(tmp, model=model, cutoff_len=64, learning_rate=1e-3, **hyper))
    return lf.write_yaml(tmp / "train.yaml", config)


async def start_training(tmp: Path, model: Path, max_steps: int) -> process.Run:
    """Start a real `llamafactory-cli train` of the tiny model."""
    yaml_path = prepare_job(tmp, model, max_steps)
    env = process.child_env(VENV, tmp / "home")
    return await process.start(lf.argv(VENV, yaml_path), log_path=tmp / "train.log", cwd=tmp, env=env)


async def first_metrics(tail: LogTail, run: process.Run) -> list[Any]:
    """Poll the log until it yields metrics; fails if the run exits first or nothing comes within METRIC_WAIT_S."""
    async with asyncio.timeout(METRIC_WAIT_S):
        while not (metrics := tail.read()):
            assert run.returncode is None, f"training exited ({run.returncode}) before logging a step"
            await asyncio.sleep(0.1)
    return metrics


def log_excerpt(run: process.Run) -> str:
    """The end of the run's log, for failure messages."""
    return run.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]


async def test_real_lora_sft_reports_live_metrics(tmp_path: Path, tiny_model: Path) -> None:
    run = await start_training(tmp_path, tiny_model, max_steps=10)
    tail = LogTail(tmp_path / "out" / "trainer_log.jsonl")
    seen = await first_metrics(tail, run)  # observed while the process still ran
    status = await run.wait(limit_s=METRIC_WAIT_S)
    seen += tail.read()
    assert status == "succeeded", log_excerpt(run)
    steps = [m["current_steps"] for m in seen if m["loss"] is not None]
    assert steps[-1] == 10 and steps == sorted(steps)
    assert all(m["total_steps"] == 10 and m["lr"] is not None for m in seen if m["loss"] is not None)
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))["r"] == 8
    swanlog = tmp_path / "swanlog"
    assert (swanlog / "runs.swanlab").exists()
    assert list(swanlog.glob("run-*/logs/*/*.log")), "no SwanLab metric files"
    assert not process.group_alive(run.pgid)


async def test_real_run_cancelled_after_its_first_metric(tmp_path: Path, tiny_model: Path) -> None:
    run = await start_training(tmp_path, tiny_model, max_steps=10_000)
    await first_metrics(LogTail(tmp_path / "out" / "trainer_log.jsonl"), run)
    assert await run.cancel(grace=10) == "cancelled", log_excerpt(run)
    assert run.status() == "cancelled" and run.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(run.pgid, 0)
    assert not process.alive(run.pid)


def test_gateway_side_modules_do_not_import_torch() -> None:
    code = "import sys, trainer.llamafactory, trainer.process, trainer.metrics; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
