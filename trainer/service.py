"""The trainer's operations shared by the CLI and the admin API: upload a dataset (validated row by row), submit a
job (validated against the registered base models and the datasets), and prepare a job's folder for
LLaMA-Factory (its dataset_info.json, the dataset linked in, train.yaml)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config.model import TrainerConfig
from trainer import datasets, llamafactory
from trainer.datasets import RowError, Validated
from trainer.spec import JobSpec
from trainer.store import DatasetRecord, JobRecord, Missing, TrainerStore

DATASET_FILE = "data.jsonl"


class Refused(ValueError):
    """A dataset or job that cannot be accepted; `problems` are (where, message) pairs, safe to show."""

    def __init__(self, message: str, problems: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.problems = problems


def default_venv() -> Path:
    """`.venv-trainer` beside the gateway's own virtual environment."""
    return Path(sys.prefix).parent / ".venv-trainer"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A job's folder, ready for `llamafactory-cli train`."""

    yaml: Path
    output_dir: Path
    swanlab_dir: Path
    log: Path


class TrainerService:
    def __init__(self, store: TrainerStore, config: TrainerConfig) -> None:
        self.store = store
        self.config = config
        self.venv = Path(config.venv) if config.venv else default_venv()

    @property
    def swanlab_dir(self) -> Path:
        """One SwanLab log folder for every job (each a run of its own), so one dashboard shows them all."""
        return self.store.root / "swanlab"

    @property
    def gpu(self) -> bool:
        return any(device != "cpu" for device in self.config.devices)

    def add_dataset(
        self, name: str, filename: str, data: bytes, *, team_id: int | None = None, created_by: str | None = None
    ) -> tuple[DatasetRecord, Validated]:
        """Validate an upload and store it; Refused names every bad row and field."""
        checked = datasets.validate(data, filename, max_bytes=self.config.max_dataset_bytes)
        if not checked.ok or checked.format is None:
            problems = [(f"row {e.row}, {e.field}" if e.row else e.field, e.message) for e in checked.errors]
            raise Refused(_refusal(checked.errors, checked.more_errors), problems)
        fmt, preference = checked.format, checked.preference
        record = DatasetRecord(
            name, fmt, preference, checked.row_count, len(data), time.time(), team_id=team_id, created_by=created_by
        )

        def write(folder: Path) -> None:
            datasets.write_dataset(folder, "data", checked.rows, fmt, preference=preference)

        return self.store.add_dataset(record, write), checked

    def submit(self, spec: JobSpec, *, team_id: int | None = None, created_by: str | None = None) -> JobRecord:
        """Queue a job after checking it can run here; Refused lists what stops it."""
        try:
            preference: bool | None = self.store.dataset(spec.dataset).preference
        except Missing:
            preference = None
        problems = spec.problems(base_models=self.config.base_models, dataset_is_preference=preference, gpu=self.gpu)
        if problems:
            raise Refused("the job cannot run: " + "; ".join(f"{w}: {m}" for w, m in problems), problems)
        record = JobRecord(spec.name, spec.model_dump(), team_id=team_id, created_by=created_by)
        return self.store.add_job(record)

    def prepare(self, job: JobRecord) -> Prepared:
        """Write the job's dataset_info.json, link its dataset in, and write train.yaml."""
        spec = JobSpec.model_validate(job.spec)
        folder = self.store.job_dir(job.name)
        dataset = self.store.dataset(spec.dataset)
        data_dir = folder / "data"
        data_dir.mkdir(exist_ok=True)
        _link(self.store.dataset_file(spec.dataset), data_dir / DATASET_FILE)
        info = datasets.dataset_info_entry("train", DATASET_FILE, dataset.format, preference=dataset.preference)
        (data_dir / "dataset_info.json").write_text(json.dumps(info, ensure_ascii=False, indent=1), encoding="utf-8")
        prepared = Prepared(folder / "train.yaml", folder / "output", self.swanlab_dir, folder / "train.log")
        config = llamafactory.train_config(self._job_keys(spec, data_dir, prepared))
        llamafactory.write_yaml(prepared.yaml, config)
        return prepared

    def _job_keys(self, spec: JobSpec, data_dir: Path, prepared: Prepared) -> dict[str, Any]:
        h = spec.hyper
        return {
            "model": self.config.base_models[spec.base_model],
            "dataset": "train",
            "dataset_dir": str(data_dir),
            "output_dir": str(prepared.output_dir),
            "swanlab_logdir": str(prepared.swanlab_dir),
            "swanlab_run_name": spec.name,
            "stage": spec.stage,
            "finetuning_type": spec.method,
            "template": spec.template,
            "gpu": self.gpu,
            "lora_rank": h.lora_rank,
            "lora_alpha": h.lora_alpha,
            "lora_dropout": h.lora_dropout,
            "lora_target": h.lora_target,
            "learning_rate": h.learning_rate,
            "num_train_epochs": h.epochs,
            "max_steps": h.max_steps,
            "cutoff_len": h.cutoff_len,
            "per_device_train_batch_size": h.batch_size,
            "gradient_accumulation_steps": h.gradient_accumulation,
            "val_size": h.val_size,
            "eval_steps": h.eval_steps,
            "save_steps": h.save_steps,
            "warmup_ratio": h.warmup_ratio,
            "seed": h.seed,
            "pref_beta": h.pref_beta,
        }


def _link(source: Path, target: Path) -> None:
    """A hard link where the filesystem allows it, else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _refusal(errors: tuple[RowError, ...], more: int) -> str:
    if not errors:
        return "the dataset is empty or in no known format"
    first = errors[0]
    extra = len(errors) - 1 + more
    where = f"row {first.row}, {first.field}" if first.row else first.field
    return f"{where}: {first.message}" + (f" (and {extra} more problems)" if extra else "")
