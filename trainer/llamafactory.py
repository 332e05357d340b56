"""LLaMA-Factory's inputs as pure data: the train and export YAML and the argv (dataset_info.json
entries come from trainer.datasets).

Gateway-side: imports neither torch nor LLaMA-Factory. The run itself is `llamafactory-cli train <yaml>` in
the trainer's own venv (.venv-trainer), started by `trainer.process`. Keys follow LLaMA-Factory 0.9.5.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml

STAGES: Final = frozenset({"sft", "dpo", "pt"})
METHODS: Final = frozenset({"lora", "qlora", "freeze", "full"})
COMMANDS: Final = frozenset({"train", "export"})

DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "stage": "sft",
        "finetuning_type": "lora",
        "template": "qwen",
        "gpu": False,
        "lora_rank": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "lora_target": "all",
        "learning_rate": 1e-4,
        "num_train_epochs": 3.0,
        "max_steps": None,
        "cutoff_len": 1024,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 4,
        "val_size": 0.0,
        "eval_steps": 50,
        "save_steps": 500,
        "warmup_ratio": 0.0,
        "seed": 42,
        "pref_beta": 0.1,
        "swanlab_project": "switchyard",
        "swanlab_run_name": None,
    }
)
"""Every optional job key with its default; `REQUIRED` lists the rest."""

REQUIRED: Final = frozenset({"model", "dataset", "dataset_dir", "output_dir", "swanlab_logdir"})

_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,99}")
_TARGET = re.compile(r"all|\w+(,\w+)*")
_FILE = re.compile(r"[A-Za-z0-9][\w.-]{0,127}")
_INTS: Final = frozenset(
    {"lora_rank", "lora_alpha", "cutoff_len", "per_device_train_batch_size", "gradient_accumulation_steps"}
    | {"eval_steps", "save_steps", "seed", "max_steps"}
)
_FLOATS: Final = frozenset(
    {"lora_dropout", "learning_rate", "num_train_epochs", "val_size", "warmup_ratio", "pref_beta"}
)


class ConfigError(ValueError):
    """A job that cannot be turned into a LLaMA-Factory config (unknown key, bad value, qlora without a GPU)."""


def _number(key: str, value: object) -> None:
    """Raise ConfigError unless `value` is a number of the key's kind (bool is not a number here)."""
    integer = key in _INTS
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and isinstance(value, float))
        or not 0 <= value < math.inf
    ):
        raise ConfigError(f"{key} must be a non-negative {'integer' if integer else 'number'}")


def _name(key: str, value: object, pattern: re.Pattern[str] = _NAME) -> str:
    """`value` when it is a plain name matching `pattern`; ConfigError otherwise."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(f"{key} must be a plain name, got {str(value)[:40]!r}")
    return value


def _checked(job: Mapping[str, Any]) -> dict[str, Any]:
    """The job merged over DEFAULTS, with unknown keys, missing keys and bad values refused."""
    unknown = set(job) - set(DEFAULTS) - REQUIRED
    missing = REQUIRED - set(job)
    if unknown or missing:
        raise ConfigError(f"unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    merged = {**DEFAULTS, **job}
    if merged["stage"] not in STAGES or merged["finetuning_type"] not in METHODS:
        raise ConfigError(f"stage must be one of {sorted(STAGES)}, finetuning_type one of {sorted(METHODS)}")
    if merged["finetuning_type"] == "qlora" and not merged["gpu"]:
        raise ConfigError("qlora needs a GPU (4-bit quantization); use lora on CPU")
    for key in (_INTS | _FLOATS) - {"max_steps"}:
        _number(key, merged[key])
    if merged["max_steps"] is not None:
        _number("max_steps", merged["max_steps"])
    for key in ("template", "dataset", "swanlab_project"):
        _name(key, merged[key])
    _name("lora_target", merged["lora_target"], _TARGET)
    return merged


def _method(job: Mapping[str, Any]) -> dict[str, Any]:
    """finetuning_type and its own keys (LoRA's rank, alpha, dropout and targets; qlora's 4-bit)."""
    method = job["finetuning_type"]
    if method in ("freeze", "full"):
        return {"finetuning_type": method}
    lora = {
        "finetuning_type": "lora",
        "lora_rank": job["lora_rank"],
        "lora_alpha": job["lora_alpha"],
        "lora_dropout": job["lora_dropout"],
        "lora_target": job["lora_target"],
    }
    return lora | ({"quantization_bit": 4} if method == "qlora" else {})


def _length(job: Mapping[str, Any]) -> dict[str, Any]:
    """max_steps when the job asks for it (it overrides epochs in the Trainer), else num_train_epochs."""
    if job["max_steps"]:
        return {"max_steps": job["max_steps"]}
    return {"num_train_epochs": float(job["num_train_epochs"])}


def _evaluation(job: Mapping[str, Any]) -> dict[str, Any]:
    """A held-out split evaluated every eval_steps, only when val_size is above 0."""
    if not job["val_size"]:
        return {}
    return {
        "val_size": job["val_size"],
        "eval_strategy": "steps",
        "eval_steps": job["eval_steps"],
        "per_device_eval_batch_size": job["per_device_train_batch_size"],
    }


def _device(gpu: bool) -> dict[str, Any]:
    """CPU: use_cpu and no bf16; GPU: bf16."""
    return {"bf16": True} if gpu else {"use_cpu": True, "bf16": False}


def _tracking(job: Mapping[str, Any]) -> dict[str, Any]:
    """SwanLab in local mode (cloud mode wants an interactive login); `report_to: swanlab` crashes in 0.10.3."""
    run_name = job["swanlab_run_name"] or Path(str(job["output_dir"])).name
    return {
        "report_to": "none",
        "use_swanlab": True,
        "swanlab_mode": "local",
        "swanlab_logdir": str(job["swanlab_logdir"]),
        "swanlab_project": job["swanlab_project"],
        "swanlab_run_name": _name("swanlab_run_name", run_name),
    }


def train_config(job: Mapping[str, Any]) -> dict[str, Any]:
    """The `llamafactory-cli train` YAML for a job (keys: REQUIRED plus any of DEFAULTS); ConfigError if invalid."""
    job = _checked(job)
    config: dict[str, Any] = {
        "model_name_or_path": str(job["model"]),
        "trust_remote_code": False,
        "stage": job["stage"],
        "do_train": True,
        **_method(job),
        "dataset": job["dataset"],
        "dataset_dir": str(job["dataset_dir"]),
        "template": job["template"],
        "cutoff_len": job["cutoff_len"],
        "output_dir": str(job["output_dir"]),
        "logging_steps": 1,
        "save_steps": job["save_steps"],
        "plot_loss": True,
        "per_device_train_batch_size": job["per_device_train_batch_size"],
        "gradient_accumulation_steps": job["gradient_accumulation_steps"],
        "learning_rate": job["learning_rate"],
        **_length(job),
        "lr_scheduler_type": "cosine",
        "warmup_ratio": job["warmup_ratio"],
        "seed": job["seed"],
        **_evaluation(job),
        **_device(bool(job["gpu"])),
        **_tracking(job),
    }
    return config | ({"pref_beta": job["pref_beta"], "pref_loss": "sigmoid"} if job["stage"] == "dpo" else {})


def export_config(model: Path | str, adapter_dir: Path | str, export_dir: Path | str, template: str) -> dict[str, Any]:
    """The `llamafactory-cli export` YAML merging a LoRA adapter into its base: a standalone safetensors model."""
    return {
        "model_name_or_path": str(model),
        "adapter_name_or_path": str(adapter_dir),
        "trust_remote_code": False,
        "template": _name("template", template),
        "finetuning_type": "lora",
        "export_dir": str(export_dir),
        "export_size": 5,
        "export_device": "cpu",
        "export_legacy_format": False,
    }


def write_yaml(path: Path, config: Mapping[str, Any]) -> Path:
    """Write a config with yaml.safe_dump (keys in their order) and return the path."""
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def argv(venv: Path, yaml_path: Path | str, command: str = "train") -> list[str]:
    """`[venv/bin/llamafactory-cli, command, yaml_path]`: the only program a training job runs (argv, no shell)."""
    if command not in COMMANDS:
        raise ConfigError(f"command must be one of {sorted(COMMANDS)}")
    return [str(venv / "bin" / "llamafactory-cli"), command, str(yaml_path)]
