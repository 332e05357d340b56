"""The scheduler's lifecycle with a stand-in `llamafactory-cli` (a shell script in a fake venv that logs steps and
writes adapter files like the real one): queue -> running -> succeeded / failed / cancelled, one job per device,
cancel of the whole process group, and what a new scheduler does with jobs an earlier one left running."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from gateway.config.model import TrainerConfig
from trainer.scheduler import Scheduler
from trainer.service import Refused, TrainerService
from trainer.spec import Hyper, JobSpec
from trainer.store import JobRecord, TrainerStore

# Logs `steps` lines of trainer_log.jsonl (one every `pause` seconds), then writes the adapter; `fail` exits 3.
# A child `sleep` in the same group shows that cancel stops the whole group.
FAKE_CLI = """#!/bin/sh
yaml="$2"
out=$(sed -n 's/^output_dir: //p' "$yaml")
steps=$(sed -n 's/^max_steps: //p' "$yaml")
mkdir -p "$out"
sleep 600 &
case "$out" in *fail*) echo "ValueError: the dataset is broken" >&2; kill $!; exit 3;; esac
i=1
while [ "$i" -le "$steps" ]; do
  printf '{"current_steps": %d, "total_steps": %d, "loss": 1.5, "lr": 0.0001, "percentage": %d}\\n' \\
    "$i" "$steps" $((100 * i / steps)) >> "$out/trainer_log.jsonl"
  sleep 0.05
  i=$((i + 1))
done
echo '{}' > "$out/adapter_config.json"
echo 'weights' > "$out/adapter_model.safetensors"
echo '{"train_loss": 1.5}' > "$out/all_results.json"
kill $!
"""
ROWS = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(8)]


@pytest.fixture
def service(tmp_path: Path) -> TrainerService:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    cli = venv / "bin" / "llamafactory-cli"
    cli.write_text(FAKE_CLI)
    cli.chmod(0o755)
    config = TrainerConfig(venv=str(venv), base_models={"tiny": str(tmp_path / "model")})
    svc = TrainerService(TrainerStore(tmp_path / "trainer"), config)
    data = "\n".join(json.dumps(r) for r in ROWS).encode()
    svc.add_dataset("rows", "rows.jsonl", data)
    return svc


def spec(name: str, steps: int = 3) -> JobSpec:
    return JobSpec(name=name, base_model="tiny", dataset="rows", hyper=Hyper(max_steps=steps))


async def settle(scheduler: Scheduler, name: str, timeout: float = 30) -> JobRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await scheduler.step()
        job = scheduler.store.job(name)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} did not finish: {scheduler.store.job(name)}")


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_job_runs_to_success_with_metrics_and_adapter(service: TrainerService) -> None:
    service.submit(spec("ok"))
    scheduler = Scheduler(service)
    assert scheduler.try_lead()
    job = await settle(scheduler, "ok")
    assert job.status == "succeeded", job
    assert job.metrics["current_steps"] == 3
    assert job.metrics["loss"] == 1.5
    assert job.adapter is not None
    assert {"adapter_model.safetensors", "adapter_config.json"} <= set(job.adapter["files"])
    assert job.adapter["results"] == {"train_loss": 1.5}
    written = (service.store.job_dir("ok") / "train.yaml").read_text()
    assert "use_swanlab: true" in written
    assert "report_to: none" in written
    scheduler.release()


async def test_a_failing_run_records_the_reason(service: TrainerService) -> None:
    service.submit(spec("will-fail"))
    scheduler = Scheduler(service)
    assert scheduler.try_lead()
    job = await settle(scheduler, "will-fail")
    assert job.status == "failed"
    assert job.exit_code == 3
    assert job.error is not None
    assert "the dataset is broken" in job.error


async def test_one_job_per_device_the_rest_wait(service: TrainerService) -> None:
    service.submit(spec("first", steps=40))
    service.submit(spec("second", steps=2))
    scheduler = Scheduler(service)
    assert scheduler.try_lead()
    await scheduler.step()
    assert service.store.job("first").status == "running"
    assert service.store.job("second").status == "queued"
    assert (await settle(scheduler, "first")).status == "succeeded"
    assert (await settle(scheduler, "second")).status == "succeeded"


async def test_cancel_stops_the_whole_process_group(service: TrainerService) -> None:
    service.submit(spec("long", steps=100_000))
    scheduler = Scheduler(service)
    assert scheduler.try_lead()
    deadline = time.monotonic() + 30
    while not service.store.job("long").metrics and time.monotonic() < deadline:
        await scheduler.step()
        await asyncio.sleep(0.05)
    pid = service.store.job("long").pid
    assert pid is not None
    await scheduler.cancel("long")
    job = await settle(scheduler, "long")
    assert job.status == "cancelled"
    assert group_gone(pid)


async def test_cancel_of_a_queued_job_is_immediate(service: TrainerService) -> None:
    service.submit(spec("waiting"))
    job = await Scheduler(service).cancel("waiting")
    assert job.status == "cancelled"


async def test_only_one_scheduler_leads(service: TrainerService) -> None:
    first, second = Scheduler(service), Scheduler(service)
    assert first.try_lead()
    assert not second.try_lead()
    first.release()
    assert second.try_lead()
    second.release()


async def test_a_new_scheduler_adopts_live_jobs_and_settles_dead_ones(service: TrainerService) -> None:
    alive = subprocess.Popen(["sleep", "60"], start_new_session=True)
    reaper = threading.Thread(target=alive.wait)  # it is this test's child: reap it as init would an orphan
    reaper.start()
    dead = subprocess.Popen(["true"], start_new_session=True)
    dead.wait()
    for name, pid in (("adopted", alive.pid), ("orphan", dead.pid)):
        service.submit(spec(name))
        service.store.update_job(name, status="running", pid=pid, device="cpu")
    scheduler = Scheduler(service)
    try:
        assert scheduler.try_lead()
        orphan = service.store.job("orphan")
        assert orphan.status == "failed"
        assert orphan.error is not None
        assert "no scheduler watched it" in orphan.error
        assert "adopted" in scheduler.running
        await scheduler.cancel("adopted")
        job = await settle(scheduler, "adopted")
        assert job.status == "cancelled"
        reaper.join(10)
        assert alive.returncode == -signal.SIGTERM
    finally:
        alive.kill()
        reaper.join(10)
        scheduler.release()


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"base_model": "gpt-5"}, "base_model"),
        ({"dataset": "nope"}, "dataset"),
        ({"stage": "dpo"}, "dataset"),
        ({"method": "qlora"}, "method"),
    ],
)
def test_submit_refuses_what_cannot_run_here(service: TrainerService, fields: dict[str, str], where: str) -> None:
    values = {"name": "x", "base_model": "tiny", "dataset": "rows"} | fields
    with pytest.raises(Refused) as caught:
        service.submit(JobSpec.model_validate(values))
    assert where in [w for w, _ in caught.value.problems]


@pytest.mark.parametrize("name", ["../etc", "a b", "x;rm -rf /", "$(id)", "", ".hidden"])
def test_names_with_paths_or_shell_text_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        JobSpec.model_validate({"name": name, "base_model": "tiny", "dataset": "rows"})


def test_a_dataset_with_errors_is_refused_with_rows_and_fields(service: TrainerService) -> None:
    bad = b'{"instruction": "q", "output": ""}\n{"instruction": 3, "output": "a"}\n'
    with pytest.raises(Refused) as caught:
        service.add_dataset("bad", "bad.jsonl", bad)
    wheres = [w for w, _ in caught.value.problems]
    assert any(w.startswith("row 1") for w in wheres)
    assert any(w.startswith("row 2") for w in wheres)
    assert "bad" not in [d.name for d in service.store.datasets()]


def test_a_relative_data_dir_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = TrainerStore(Path(".switchyard") / "trainer")
    assert store.root == tmp_path / ".switchyard" / "trainer"
    assert store.job_dir("j").is_absolute()
