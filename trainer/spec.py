"""A fine-tuning job as a user asks for it: base model, dataset, stage, method, template and hyper-parameters, with
sane defaults, validated before anything runs. Names only: the base model is one the operator registered, the
dataset one that was uploaded; no path, flag or shell text from a request ever reaches the command line."""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Stage = Literal["sft", "dpo", "pt"]
Method = Literal["lora", "qlora", "freeze", "full"]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.-]{0,99}$")]
Template = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,40}$")]
LoraTarget = Annotated[str, Field(pattern=r"^(all|[A-Za-z0-9_]+(,[A-Za-z0-9_]+)*)$", max_length=200)]


class Hyper(BaseModel):
    """Training hyper-parameters; the defaults suit a LoRA SFT of a small model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lora_rank: int = Field(default=8, ge=1, le=256)
    lora_alpha: int = Field(default=16, ge=1, le=1024)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_target: LoraTarget = "all"
    learning_rate: float = Field(default=1e-4, gt=0, le=1)
    epochs: float = Field(default=3.0, gt=0, le=100)
    max_steps: int | None = Field(default=None, ge=1, le=1_000_000)
    """Stops after this many steps (overrides epochs)."""
    cutoff_len: int = Field(default=1024, ge=16, le=131_072)
    batch_size: int = Field(default=1, ge=1, le=512)
    gradient_accumulation: int = Field(default=4, ge=1, le=1024)
    val_size: float = Field(default=0.0, ge=0, lt=0.5)
    """Share of the dataset held out for eval loss (0: none)."""
    eval_steps: int = Field(default=50, ge=1, le=1_000_000)
    save_steps: int = Field(default=500, ge=1, le=1_000_000)
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    pref_beta: float = Field(default=0.1, gt=0, le=10)
    """DPO's beta."""


class JobSpec(BaseModel):
    """What to train: `base_model` and `dataset` are names, checked against what exists by `check`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    base_model: Name
    dataset: Name
    stage: Stage = "sft"
    method: Method = "lora"
    template: Template = "qwen"
    hyper: Hyper = Field(default_factory=Hyper)

    @model_validator(mode="after")
    def _stage_fits_method(self) -> Self:
        if self.stage == "dpo" and self.method == "full":
            raise ValueError("dpo runs with lora, qlora or freeze here (a full-weight reference model is too large)")
        return self

    def problems(
        self, *, base_models: Collection[str], dataset_is_preference: bool | None, gpu: bool
    ) -> list[tuple[str, str]]:
        """What stops this job from running here, as (field, message); empty when it can run."""
        found: list[tuple[str, str]] = []
        if self.base_model not in base_models:
            known = ", ".join(sorted(base_models)) or "none registered (trainer.base_models)"
            found.append(("base_model", f"no base model named {self.base_model!r}; known: {known}"))
        if dataset_is_preference is None:
            found.append(("dataset", f"no dataset named {self.dataset!r}"))
        elif dataset_is_preference != (self.stage == "dpo"):
            need = "preference (chosen/rejected)" if self.stage == "dpo" else "instruction or chat"
            found.append(("dataset", f"stage {self.stage} needs a {need} dataset"))
        if self.method == "qlora" and not gpu:
            found.append(("method", "qlora needs a GPU (4-bit quantization); use lora on CPU"))
        return found
