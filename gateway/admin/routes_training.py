"""Fine-tuning under `/admin/api/training`: the registered base models and devices; datasets (a multipart `file`
part or the raw file, validated row by row, previewed); jobs (queued for the gateway's scheduler, cancelled, their
log, their metrics and a live event stream); where the SwanLab dashboard is. Everyone reads their team's datasets
and jobs and the team-less ones (owners all); admins change their team's, owners any. Another team's dataset or job
is a 404, as if it did not exist.

Names are checked (letters, digits, `_.-`) before anything touches the disk; an upload's file name only chooses
the parser (`.jsonl` is read line by line) and is never used as a path."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shlex
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

import orjson
from litestar import Request, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromQuery, JSONBody, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from gateway.admin.context import AdminContext, Ctx, Name, Principal, caller, client_ip
from gateway.admin.respond import Conflict, json_response, listing, read_bounded
from gateway.admin.store import repo as admin_repo
from gateway.errors import InvalidRequest, NotFound, PayloadTooLarge, PermissionDenied
from trainer import datasets
from trainer.metrics import LogTail, Metric
from trainer.service import Refused
from trainer.spec import JobSpec
from trainer.store import FINAL, DatasetRecord, JobRecord, JobStatus, Missing, NameTaken, StoreError, TrainerStore
from trainer.store import checked as checked_name

BASE: Final = "/admin/api/training"
MULTIPART_SLACK: Final = 64 * 1024
"""Room for the multipart framing (boundary, part headers, the name field) over the dataset limit."""
EVENT_POLL_S: Final = 0.5
KEEPALIVE_POLLS: Final = 30
"""Quiet polls (15 s) between keep-alive comments on the event stream, so proxies keep it open."""
MAX_TAIL_BYTES: Final = 1 << 20
ROW_FIELD: Final = re.compile(r"row (\d+), (.*)", re.DOTALL)
SAFE_HOST: Final = re.compile(r"[A-Za-z0-9.:-]{1,255}")
CONTINUATION: Final = bytes(range(0x80, 0xC0))
"""UTF-8 continuation bytes: a log tail that starts with them starts inside a character."""

Rows = Annotated[int, QueryParameter(ge=1, le=100)]
TailBytes = Annotated[int, QueryParameter(ge=1, le=MAX_TAIL_BYTES)]
Owned = TypeVar("Owned", DatasetRecord, JobRecord)


class InvalidDataset(InvalidRequest):
    """A refused upload: the first problem in the message, the kept ones (at most 100) in `error.errors`."""

    code = "invalid_dataset"

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message, param="file")
        self.errors = errors

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return orjson.dumps({"error": {**error, "errors": self.errors}})


@dataclass(frozen=True, slots=True)
class DatasetUpload:
    """A dataset upload: its checked name, the client's file name (chooses the parser only) and its bytes."""

    name: str
    filename: str
    data: bytes


# --- who sees and changes what --------------------------------------------------------------------------------


def sees(who: Principal, team_id: int | None) -> bool:
    """Owners see everything; everyone else their team's objects and the team-less ones."""
    return who.role == "owner" or team_id is None or team_id == who.team_id


def manages(who: Principal, team_id: int | None) -> bool:
    """Owners change anything; admins their own team's objects (a team-less one is the owners')."""
    return who.role == "owner" or (who.role == "admin" and who.team_id is not None and team_id == who.team_id)


def _team_of(who: Principal) -> int | None:
    """The team of a new dataset or job: the admin's own; an owner's is team-less (every team sees it)."""
    if who.role == "owner":
        return None
    if who.team_id is None:
        raise PermissionDenied("an admin without a team cannot create datasets or jobs")
    return who.team_id


def _access(who: Principal, record: Owned | None, kind: str, manage: bool) -> Owned:
    """The record if the caller sees it (404 otherwise) and, for a change, manages it (403 otherwise)."""
    if record is None or not sees(who, record.team_id):
        raise NotFound(f"no such {kind}")
    if manage and not manages(who, record.team_id):
        raise PermissionDenied(f"you may not change this {kind}")
    return record


def _name(ref: str, param: str = "name") -> str:
    """A checked dataset or job name; a 400 naming `param` otherwise."""
    try:
        return checked_name(ref)
    except StoreError as exc:
        raise InvalidRequest(str(exc), param=param) from None


def _store(ctx: AdminContext) -> TrainerStore:
    return ctx.scheduler.store


def _dataset(ctx: AdminContext, who: Principal, ref: str, *, manage: bool = False) -> DatasetRecord:
    try:
        record: DatasetRecord | None = _store(ctx).dataset(_name(ref))
    except Missing:
        record = None
    return _access(who, record, "dataset", manage)


def visible_job(ctx: AdminContext, who: Principal, ref: str, *, manage: bool = False) -> JobRecord:
    try:
        record: JobRecord | None = _store(ctx).job(_name(ref))
    except Missing:
        record = None
    return _access(who, record, "job", manage)


@contextmanager
def _store_errors() -> Iterator[None]:
    """The trainer store's refusals as API errors (409, 404, 400)."""
    try:
        yield
    except NameTaken as exc:
        raise Conflict(str(exc), param="name") from None
    except Missing as exc:
        raise NotFound(str(exc)) from None
    except StoreError as exc:
        raise InvalidRequest(str(exc), param="name") from None


# --- shapes and plumbing --------------------------------------------------------------------------------------


def job_out(job: JobRecord, who: Principal) -> dict[str, Any]:
    """A job record; the adapter's folder on disk is shown to admins and owners only."""
    out = asdict(job) | {"final": job.status in FINAL}
    if job.adapter is not None and not who.at_least("admin"):
        out["adapter"] = {key: value for key, value in job.adapter.items() if key != "path"}
    return out


def _metrics_path(store: TrainerStore, name: str) -> Path:
    return store.job_dir(name) / "output" / "trainer_log.jsonl"


async def _audit(  # noqa: PLR0917 - an audit entry's fields, in order
    ctx: AdminContext,
    request: Request[Any, Any, Any],
    action: str,
    what: tuple[str, str],
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> None:
    """Record a change; datasets and jobs are not config, so no new config version is announced."""
    who = caller(request).username
    async with ctx.engine.begin() as conn:
        await admin_repo.append_audit(conn, who, action, what[0], what[1], before, after, client_ip(request))


# --- base models and the dashboard ----------------------------------------------------------------------------


@get(BASE + "/base-models", opt={"role": "viewer"})
async def base_models(ctx: Ctx, request: Request[Any, Any, Any]) -> Response[bytes]:
    """The base models jobs may start from (their folders for admins and owners) and the training devices."""
    service = ctx.scheduler.service
    paths = caller(request).at_least("admin")
    models = [{"name": n} | ({"path": p} if paths else {}) for n, p in sorted(service.config.base_models.items())]
    return json_response({"object": "list", "data": models, "devices": service.config.devices, "gpu": service.gpu})


@get(BASE + "/dashboard", opt={"role": "viewer"})
async def dashboard(ctx: Ctx, request: Request[Any, Any, Any]) -> Response[bytes]:
    """Where SwanLab's dashboard is served (started separately, with the command shown)."""
    host = request.url.hostname or ""
    if not SAFE_HOST.fullmatch(host):
        host = ctx.file_config.server.host
    host = f"[{host}]" if ":" in host else host
    port = ctx.scheduler.service.config.dashboard_port
    path = ctx.live.path
    config = str(path) if path is not None and caller(request).at_least("admin") else "gateway.yaml"
    command = f"switchyard trainer dashboard --config {shlex.quote(config)}"
    return json_response({"url": f"http://{host}:{port}", "port": port, "command": command})


# --- datasets -------------------------------------------------------------------------------------------------


@get(BASE + "/datasets", opt={"role": "viewer"})
async def list_datasets(ctx: Ctx, request: Request[Any, Any, Any]) -> Response[bytes]:
    who = caller(request)
    records = await asyncio.to_thread(_store(ctx).datasets)
    return listing([asdict(r) for r in records if sees(who, r.team_id)])


@post(BASE + "/datasets", opt={"role": "admin"}, status_code=201)
async def upload_dataset(
    ctx: Ctx,
    request: Request[Any, Any, Any],
    name: FromQuery[str | None] = None,
    filename: FromQuery[str | None] = None,
) -> Response[bytes]:
    """Multipart with a `file` part and a `name` field, or the raw file with `?name=` (and `?filename=`).

    Answers 201 with the record and the validation report (format, rows, preview, stats); a dataset with any bad
    row is refused whole: 400 `invalid_dataset` with each problem's row and field."""
    who = caller(request)
    team_id = _team_of(who)
    service = ctx.scheduler.service
    upload = await read_dataset(request, service.config.max_dataset_bytes, name, filename)
    _absent(ctx, upload.name)
    try:
        with _store_errors():
            record, report = await asyncio.to_thread(
                service.add_dataset, upload.name, upload.filename, upload.data, team_id=team_id, created_by=who.username
            )
    except Refused as exc:
        raise _invalid(exc) from None
    await _audit(ctx, request, "upload", ("training_dataset", record.name), None, asdict(record))
    return json_response(asdict(record) | {"validation": report.report()}, 201)


def _absent(ctx: AdminContext, name: str) -> None:
    """409 before validating an upload whose name is taken."""
    try:
        _store(ctx).dataset(name)
    except Missing:
        return
    raise Conflict(f"a dataset named {name!r} already exists", param="name")


def _invalid(exc: Refused) -> InvalidDataset:
    return InvalidDataset(str(exc), [_row_error(where, message) for where, message in exc.problems[:100]])


def _row_error(where: str, message: str) -> dict[str, Any]:
    """A refusal's (where, message) as {row, field, message}; row 0 is the whole file."""
    found = ROW_FIELD.fullmatch(where)
    if found is None:
        return {"row": 0, "field": where, "message": message}
    return {"row": int(found[1]), "field": found[2], "message": message}


@get(BASE + "/datasets/{name:str}", opt={"role": "viewer"})
async def get_dataset(ctx: Ctx, request: Request[Any, Any, Any], name: Name) -> Response[bytes]:
    return json_response(asdict(_dataset(ctx, caller(request), name)))


@get(BASE + "/datasets/{name:str}/preview", opt={"role": "viewer"})
async def preview_dataset(ctx: Ctx, request: Request[Any, Any, Any], name: Name, rows: Rows = 5) -> Response[bytes]:
    """The first `rows` rows as turns (texts clipped), as the upload's report shows them."""
    record = _dataset(ctx, caller(request), name)
    preview = await asyncio.to_thread(_preview, _store(ctx), record, rows)
    return json_response(asdict(record) | {"object": "list", "data": preview})


def _preview(store: TrainerStore, record: DatasetRecord, rows: int) -> list[dict[str, Any]]:
    with store.dataset_file(record.name).open("rb") as handle:
        head = b"".join(itertools.islice(handle, rows))
    report = datasets.validate(head, "data.jsonl", record.format, preview_rows=rows).report()
    preview: list[dict[str, Any]] = report["preview"]
    return preview


@delete(BASE + "/datasets/{name:str}", opt={"role": "admin"}, status_code=200)
async def delete_dataset(ctx: Ctx, request: Request[Any, Any, Any], name: Name) -> Response[bytes]:
    """Remove a dataset; a 409 while a queued or running job still needs it."""
    record = _dataset(ctx, caller(request), name, manage=True)
    jobs = await asyncio.to_thread(_store(ctx).jobs)
    users = [j for j in jobs if j.spec.get("dataset") == record.name and j.status not in FINAL]
    if users:
        raise Conflict(f"dataset {record.name!r} is used by {len(users)} unfinished job(s)", param="name")
    with _store_errors():
        await asyncio.to_thread(_store(ctx).remove_dataset, record.name)
    await _audit(ctx, request, "delete", ("training_dataset", record.name), asdict(record), None)
    return json_response({"name": record.name, "deleted": True})


# --- jobs -----------------------------------------------------------------------------------------------------


@get(BASE + "/jobs", opt={"role": "viewer"})
async def list_jobs(
    ctx: Ctx, request: Request[Any, Any, Any], status: FromQuery[JobStatus | None] = None
) -> Response[bytes]:
    who = caller(request)
    jobs = await asyncio.to_thread(_store(ctx).jobs)
    shown = [j for j in jobs if sees(who, j.team_id) and status in {None, j.status}]
    return listing([job_out(j, who) for j in shown])


@post(BASE + "/jobs", opt={"role": "admin"}, status_code=201)
async def create_job(ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[JobSpec]) -> Response[bytes]:
    """Queue a job (defaults filled in); a 400 names the field that stops it (an unknown base model or dataset, a
    stage that does not fit the dataset)."""
    who = caller(request)
    team_id = _team_of(who)
    try:
        _usable_dataset(ctx, who, data)
        with _store_errors():
            job = ctx.scheduler.service.submit(data, team_id=team_id, created_by=who.username)
    except Refused as exc:
        raise InvalidRequest(str(exc), param=exc.problems[0][0] if exc.problems else None) from None
    await _audit(ctx, request, "create", ("training_job", job.name), None, asdict(job))
    return json_response(job_out(job, who), 201)


def _usable_dataset(ctx: AdminContext, who: Principal, spec: JobSpec) -> None:
    """Another team's dataset is refused exactly as the service refuses a missing one."""
    try:
        record = _store(ctx).dataset(spec.dataset)
    except Missing:
        return  # the service names it
    if not sees(who, record.team_id):
        service = ctx.scheduler.service
        problems = spec.problems(base_models=service.config.base_models, dataset_is_preference=None, gpu=service.gpu)
        raise Refused("the job cannot run: " + "; ".join(f"{w}: {m}" for w, m in problems), problems)


@get(BASE + "/jobs/{name:str}", opt={"role": "viewer"})
async def get_job(ctx: Ctx, request: Request[Any, Any, Any], name: Name) -> Response[bytes]:
    """The job: status, error, latest metrics, and after success its adapter."""
    who = caller(request)
    return json_response(job_out(visible_job(ctx, who, name), who))


@delete(BASE + "/jobs/{name:str}", opt={"role": "admin"}, status_code=200)
async def delete_job(ctx: Ctx, request: Request[Any, Any, Any], name: Name) -> Response[bytes]:
    """Remove a finished job's folder (its adapter included); a 409 while it is queued or running."""
    who = caller(request)
    job = visible_job(ctx, who, name, manage=True)
    if job.status not in FINAL:
        raise Conflict(f"job {job.name!r} is {job.status}: cancel it first", param="name")
    with _store_errors():
        await asyncio.to_thread(_store(ctx).remove_job, job.name)
    await _audit(ctx, request, "delete", ("training_job", job.name), asdict(job), None)
    return json_response({"name": job.name, "deleted": True})


@post(BASE + "/jobs/{name:str}/cancel", opt={"role": "admin"}, status_code=202)
async def cancel_job(ctx: Ctx, request: Request[Any, Any, Any], name: Name) -> Response[bytes]:
    """Cancel a queued job at once, or stop a running one's process group; the scheduler records `cancelled`."""
    who = caller(request)
    job = visible_job(ctx, who, name, manage=True)
    if job.status in FINAL:
        raise Conflict(f"job {job.name!r} already {job.status}", param="name")
    with _store_errors():
        after = await ctx.scheduler.cancel(job.name)
    await _audit(ctx, request, "cancel", ("training_job", job.name), asdict(job), asdict(after))
    return json_response(job_out(after, who), 202)


@get(BASE + "/jobs/{name:str}/logs", opt={"role": "viewer"})
async def job_logs(
    ctx: Ctx, request: Request[Any, Any, Any], name: Name, tail_bytes: TailBytes = 20_000
) -> Response[bytes]:
    """The last `tail_bytes` bytes of the job's train.log, as plain text."""
    job = visible_job(ctx, caller(request), name)
    text = await asyncio.to_thread(_tail, _store(ctx).job_dir(job.name) / "train.log", tail_bytes)
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    return Response(text, media_type="text/plain; charset=utf-8", headers=headers)


def _tail(path: Path, size: int) -> bytes:
    """The file's last `size` bytes as UTF-8 (a character cut at the start is dropped); b"" before it exists."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - size))
            data = handle.read(size)
    except FileNotFoundError:
        return b""
    return data.lstrip(CONTINUATION).decode("utf-8", errors="replace").encode()


@get(BASE + "/jobs/{name:str}/metrics", opt={"role": "viewer"})
async def job_metrics(ctx: Ctx, request: Request[Any, Any, Any], name: Name) -> Response[bytes]:
    """Every line of the job's trainer_log.jsonl so far (step, loss, learning rate, eval loss, progress)."""
    job = visible_job(ctx, caller(request), name)
    metrics = await asyncio.to_thread(LogTail(_metrics_path(_store(ctx), job.name)).read)
    return json_response({"object": "list", "job": job.name, "status": job.status, "data": metrics})


@get(BASE + "/jobs/{name:str}/events", opt={"role": "viewer"})
async def job_events(ctx: Ctx, request: Request[Any, Any, Any], name: Name) -> ServerSentEvent:
    """Server-Sent Events: `metric` for every logged step so far and as they come, `status` (the job record) at
    each change of status; the stream ends after a final status, or when the client goes away."""
    who = caller(request)
    job = visible_job(ctx, who, name)
    return ServerSentEvent(job_event_stream(_store(ctx), job.name, who), headers={"Cache-Control": "no-store"})


async def job_event_stream(
    store: TrainerStore, name: str, who: Principal, poll: float = EVENT_POLL_S
) -> AsyncIterator[ServerSentEventMessage]:
    """Poll the job and its metrics file every `poll` seconds until the job is final (or removed)."""
    tail = LogTail(_metrics_path(store, name))
    last: str | None = None
    quiet = 0
    while last not in FINAL:
        try:
            job = store.job(name)  # read before the metrics: once it is final, every metric is on disk
        except StoreError:
            return
        messages = [_metric_event(m) for m in tail.read()]
        if job.status != last:
            last = job.status
            messages.append(ServerSentEventMessage(event="status", data=_json(job_out(job, who))))
        quiet = 0 if messages else quiet + 1
        if quiet >= KEEPALIVE_POLLS:
            quiet, messages = 0, [ServerSentEventMessage(data=None, comment="keep-alive")]
        for message in messages:
            yield message
        if last not in FINAL:
            await asyncio.sleep(poll)


def _metric_event(metric: Metric) -> ServerSentEventMessage:
    return ServerSentEventMessage(event="metric", data=_json(metric))


def _json(data: Any) -> str:
    return orjson.dumps(data, default=str).decode()


TRAINING_ROUTES: list[HTTPRouteHandler] = [
    base_models,
    dashboard,
    list_datasets,
    upload_dataset,
    get_dataset,
    preview_dataset,
    delete_dataset,
    list_jobs,
    create_job,
    get_job,
    delete_job,
    cancel_job,
    job_logs,
    job_metrics,
    job_events,
]


# --- uploads --------------------------------------------------------------------------------------------------


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the dataset is over the upload limit of {limit} bytes (trainer.max_dataset_bytes)")


async def read_dataset(
    request: Request[Any, Any, Any], limit: int, name: str | None, filename: str | None
) -> DatasetUpload:
    """The uploaded dataset, at most `limit` bytes, refused as soon as its size is known to be over."""
    content_type, _ = request.content_type
    if content_type == RequestEncodingType.MULTI_PART:
        return await _multipart(request, limit, name)
    if not name:
        message = "send multipart/form-data with a 'file' part and a 'name' field, or the raw file with ?name="
        raise InvalidRequest(message, param="name")
    return DatasetUpload(_name(name), filename or "", await read_bounded(request, limit, _too_large(limit)))


async def _multipart(request: Request[Any, Any, Any], limit: int, name: str | None) -> DatasetUpload:
    """One `file` part and the `name` field (or `?name=`), the part's size checked before it is read."""
    if (request.content_length or 0) > limit + MULTIPART_SLACK:
        raise _too_large(limit)
    form = await request.form()
    try:
        parts = form.getall("file", [])
        if len(parts) != 1 or not isinstance(parts[0], UploadFile):
            raise InvalidRequest("send exactly one 'file' part, with a filename", param="file")
        given = form.get("name") or name
        if not isinstance(given, str) or not given:
            raise InvalidRequest("the dataset needs a name: a 'name' form field", param="name")
        part = parts[0]
        checked = _name(given)
        size = part.file.seek(0, os.SEEK_END)
        part.file.seek(0)
        if size > limit:
            raise _too_large(limit)
        return DatasetUpload(checked, part.filename, await part.read())
    finally:
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                await value.close()
