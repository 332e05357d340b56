"""`switchyard trainer datasets|jobs|run|logs|cancel|deploy|undeploy|export|serve-command|dashboard`: fine-tuning
from the terminal.

Datasets and jobs live under `<data_dir>/trainer` (see trainer.store). `run` queues a job and, unless a gateway
already schedules jobs on this machine, runs the scheduler here until the job ends, printing its progress.
`deploy` serves a job's adapter through a vLLM provider behind a model alias (see trainer.deploy).
Errors are one line on stderr: exit status 2 for bad usage or an unknown name, 1 for a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import subprocess
import sys
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from pydantic import ValidationError

from gateway.config.model import GatewayConfig
from gateway.metering.reports import parse_since
from gateway.store.engine import Database
from gateway.store.errors import DatabaseError
from trainer import deploy, process
from trainer.ledger_export import as_jsonl, logged_rows
from trainer.scheduler import Scheduler
from trainer.service import Refused, TrainerService
from trainer.spec import Hyper, JobSpec
from trainer.store import FINAL, StoreError, TrainerStore
from trainer.vllm_api import DeployError

USAGE: Final = 2
FAILED: Final = 1
HYPER_FLAGS: Final = tuple(Hyper.model_fields)


def service_of(cfg: GatewayConfig) -> TrainerService:
    return TrainerService(TrainerStore(Path(cfg.data_dir) / "trainer"), cfg.trainer)


def _print(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=1, default=str))


def datasets_add(service: TrainerService, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        return _fail(f"no such file: {args.file}", USAGE)
    if path.stat().st_size > service.config.max_dataset_bytes:
        return _fail(f"{args.file} is over trainer.max_dataset_bytes ({service.config.max_dataset_bytes})", FAILED)
    try:
        record, checked = service.add_dataset(args.name, path.name, path.read_bytes())
    except Refused as exc:
        for where, message in exc.problems[:20]:
            print(f"{where}: {message}", file=sys.stderr)
        return _fail(f"refused: {exc}", FAILED)
    print(f"{record.name}: {record.rows} rows, format {record.format}{' (preference)' if record.preference else ''}")
    for row in checked.preview[:3]:
        turns = " | ".join(f"{t.role}: {t.content[:60]}" for t in row.turns)
        print(f"  row {row.row}: {turns}")
    return 0


def datasets_from_ledger(service: TrainerService, args: argparse.Namespace) -> int:
    """Export the exchanges of aliases with `log_requests: true` from the usage ledger as a `messages` dataset."""
    try:
        since = parse_since(args.since, datetime.now(UTC))
    except ValueError as exc:
        return _fail(str(exc), USAGE)
    cfg: GatewayConfig = args.gateway
    rows = asyncio.run(_logged(cfg, since, args.alias))
    if not rows:
        return _fail("no logged chat exchanges in that period (set log_requests: true on the alias)", FAILED)
    try:
        record, _ = service.add_dataset(args.name, "ledger.jsonl", as_jsonl(rows))
    except Refused as exc:
        return _fail(f"refused: {exc}", FAILED)
    print(f"{record.name}: {record.rows} rows from the usage ledger, format {record.format}")
    return 0


async def _logged(cfg: GatewayConfig, since: datetime, alias: str | None) -> list[dict[str, Any]]:
    async with Database(cfg.database_url, cfg.data_dir, migrate=False) as database:
        return await logged_rows(database.engine, since, alias=alias)


def datasets_list(service: TrainerService, args: argparse.Namespace) -> int:
    _print([vars_of(d) for d in service.store.datasets()])
    return 0


def datasets_rm(service: TrainerService, args: argparse.Namespace) -> int:
    service.store.remove_dataset(args.name)
    print(f"{args.name}: removed")
    return 0


def datasets_show(service: TrainerService, args: argparse.Namespace) -> int:
    record = service.store.dataset(args.name)
    rows: list[Any] = []
    with service.store.dataset_file(args.name).open(encoding="utf-8") as handle:
        for line, _ in zip(handle, range(args.rows), strict=False):
            rows.append(json.loads(line))
    _print({**vars_of(record), "preview": rows})
    return 0


def jobs_list(service: TrainerService, args: argparse.Namespace) -> int:
    rows = [
        {
            "name": j.name,
            "status": j.status,
            "device": j.device,
            "progress": j.metrics.get("percentage"),
            "loss": j.metrics.get("loss"),
            "error": j.error,
        }
        for j in service.store.jobs()
    ]
    _print(rows)
    return 0


def spec_of(args: argparse.Namespace) -> JobSpec:
    hyper = {flag: getattr(args, flag) for flag in HYPER_FLAGS if getattr(args, flag) is not None}
    fields = {"name": args.name, "base_model": args.base_model, "dataset": args.dataset, "hyper": hyper}
    fields |= {k: getattr(args, k) for k in ("stage", "method", "template") if getattr(args, k) is not None}
    return JobSpec.model_validate(fields)


def run(service: TrainerService, args: argparse.Namespace) -> int:
    try:
        spec = spec_of(args)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        return _fail(f"{where}: {first['msg']}", USAGE)
    try:
        job = service.submit(spec)
    except Refused as exc:
        return _fail(str(exc), USAGE)
    print(f"{job.name}: queued")
    if args.no_wait:
        return 0
    final = asyncio.run(Scheduler(service).run_until_done(job.name, report=_progress))
    print(f"{final.name}: {final.status}" + (f" ({final.error})" if final.error else ""))
    return 0 if final.status == "succeeded" else FAILED


def _progress(name: str, metric: dict[str, Any]) -> None:
    step, total, loss = metric.get("current_steps"), metric.get("total_steps"), metric.get("loss")
    if loss is not None:
        eval_loss = f" eval_loss {metric['eval_loss']}" if metric.get("eval_loss") is not None else ""
        print(f"{name}: step {step}/{total} loss {loss} lr {metric.get('lr')}{eval_loss}", flush=True)


def logs(service: TrainerService, args: argparse.Namespace) -> int:
    log = service.store.job_dir(args.name) / "train.log"
    service.store.job(args.name)
    if log.is_file():
        sys.stdout.write(log.read_text(encoding="utf-8", errors="replace")[-args.tail_bytes :])
    return 0


def cancel(service: TrainerService, args: argparse.Namespace) -> int:
    job = asyncio.run(Scheduler(service).cancel(args.name))
    print(f"{job.name}: {'cancel requested' if job.status not in FINAL else job.status}")
    return 0


def _deploying(work: Coroutine[Any, Any, str]) -> int:
    """Run a deploy step and print its line; a failure is one line (status 2 when the command line was wrong)."""
    try:
        print(asyncio.run(work))
    except DeployError as exc:
        return _fail(str(exc), USAGE if exc.usage else FAILED)
    except DatabaseError as exc:
        return _fail(str(exc), FAILED)
    return 0


def deploy_job(service: TrainerService, args: argparse.Namespace) -> int:
    options = {"adapter_name": args.adapter_name, "lora_path": args.lora_path, "replace": args.replace}
    return _deploying(deploy.deploy_named(args.gateway, service.store, args.name, args.provider, args.alias, **options))


def undeploy_job(service: TrainerService, args: argparse.Namespace) -> int:
    return _deploying(deploy.undeploy_named(args.gateway, service.store, args.name))


def export_job(service: TrainerService, args: argparse.Namespace) -> int:
    return _deploying(deploy.export_named(service, args.name))


def serve_command(service: TrainerService, args: argparse.Namespace) -> int:
    try:
        argv, notes = asyncio.run(deploy.serve_command_for(service, args.name, args.chat_template))
    except DeployError as exc:
        return _fail(str(exc), USAGE if exc.usage else FAILED)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(shlex.join(argv))
    return 0


def dashboard(service: TrainerService, args: argparse.Namespace) -> int:
    """SwanLab's dashboard of every job, in the foreground until Ctrl-C."""
    home = service.store.root / "home"
    for folder in (service.swanlab_dir, home):
        folder.mkdir(parents=True, exist_ok=True)
    port = service.config.dashboard_port
    argv = deploy.dashboard_argv(service.venv, service.swanlab_dir, port)
    print(f"SwanLab dashboard on http://127.0.0.1:{port} (Ctrl-C stops it)", flush=True)
    try:
        env = process.child_env(service.venv, home)
        return subprocess.run(argv, env=env, check=False).returncode  # noqa: S603 - argv list, the trainer venv's
    except FileNotFoundError:
        return _fail(f"{argv[0]} not found: run `make trainer-env`", FAILED)
    except KeyboardInterrupt:
        return 0


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def _fail(message: str, status: int) -> int:
    print(f"switchyard trainer: {message}", file=sys.stderr)
    return status


Command = Callable[[TrainerService, argparse.Namespace], int]


def add_commands(commands: Any, load: Callable[[str], GatewayConfig | None]) -> None:
    """Register `trainer ...` on the CLI's subparsers."""

    def wrap(command: Command) -> Callable[[argparse.Namespace], int]:
        def go(args: argparse.Namespace) -> int:
            cfg = load(args.config)
            if cfg is None:
                return FAILED
            args.gateway = cfg  # deploy and undeploy reach the database and the providers
            try:
                return command(service_of(cfg), args)
            except StoreError as exc:
                return _fail(str(exc), USAGE)

        return go

    def register(sub: Any, table: Mapping[str, Entry]) -> None:
        for name, (command, helptext, arguments) in table.items():
            parser = sub.add_parser(name, help=helptext, description=helptext)
            parser.add_argument("--config", required=True, help="path to gateway.yaml")
            arguments(parser)
            parser.set_defaults(func=wrap(command))

    trainer = commands.add_parser("trainer", help="fine-tuning: datasets, jobs, logs, cancel, deploy, dashboard")
    sub = trainer.add_subparsers(dest="trainer_command", required=True)
    datasets = sub.add_parser("datasets", help="training datasets: add, list, show, rm")
    register(datasets.add_subparsers(dest="datasets_command", required=True), DATASET_COMMANDS)
    register(sub, JOB_COMMANDS)


Entry = tuple[Command, str, Callable[[argparse.ArgumentParser], None]]


def _no_args(parser: argparse.ArgumentParser) -> None:
    """A subcommand with no arguments but --config."""


def _show_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("--rows", type=int, default=5)


def _name_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")


def _dataset_add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("file", help="JSONL or JSON: alpaca, sharegpt, OpenAI messages, or chosen/rejected pairs")


def _from_ledger_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("--alias", help="only this alias's exchanges")
    parser.add_argument("--since", default="30d", help="30m, 24h, 7d, 2w or an ISO date (default 30d)")


def _logs_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("--tail-bytes", type=int, default=20_000)


def _deploy_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("--provider", required=True, help="the vLLM provider (file or admin API) to load it into")
    parser.add_argument("--alias", required=True, help="the model name clients will send")
    parser.add_argument("--adapter-name", help="the adapter's name in vLLM (default: the job's)")
    parser.add_argument("--lora-path", help="the adapter folder as vLLM's machine sees it (default: the job's)")
    parser.add_argument("--replace", action="store_true", help="re-point an alias that routes elsewhere")


def _serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name")
    parser.add_argument("--chat-template", help="a Jinja file for vLLM (default: the job's, when the base's differs)")


def _run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True)
    parser.add_argument("--base-model", required=True, help="a name under trainer.base_models")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--stage", choices=("sft", "dpo", "pt"))
    parser.add_argument("--method", choices=("lora", "qlora", "freeze", "full"))
    parser.add_argument("--template")
    parser.add_argument("--no-wait", action="store_true", help="only queue it (a running gateway schedules it)")
    for flag in HYPER_FLAGS:
        kind = Hyper.model_fields[flag].annotation
        convert = int if kind in (int, int | None) else float if kind is float else str
        parser.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=convert)


DATASET_COMMANDS: Final[Mapping[str, Entry]] = MappingProxyType(
    {
        "add": (datasets_add, "validate and store a JSONL/JSON dataset", _dataset_add_args),
        "from-ledger": (datasets_from_ledger, "a dataset of the chat exchanges aliases logged", _from_ledger_args),
        "list": (datasets_list, "list the datasets", _no_args),
        "show": (datasets_show, "a dataset's record and first rows", _show_args),
        "rm": (datasets_rm, "remove a dataset", _name_arg),
    }
)


def _job_commands() -> dict[str, Entry]:
    return {
        "jobs": (jobs_list, "list the jobs with their status and progress", _no_args),
        "run": (run, "queue a fine-tuning job and follow it", _run_args),
        "logs": (logs, "print the end of a job's log", _logs_args),
        "cancel": (cancel, "cancel a queued or running job", _name_arg),
        "deploy": (deploy_job, "load a job's adapter into vLLM and serve it as a model alias", _deploy_args),
        "undeploy": (undeploy_job, "remove a deployed job's alias and unload its adapter", _name_arg),
        "export": (export_job, "merge a job's adapter into its base model (<job>/merged)", _name_arg),
        "serve-command": (serve_command, "print a vLLM command serving the job's adapter", _serve_args),
        "dashboard": (dashboard, "run SwanLab's dashboard of every job (foreground)", _no_args),
    }


JOB_COMMANDS: Final[Mapping[str, Entry]] = MappingProxyType(_job_commands())
