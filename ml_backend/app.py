"""The HTTP routes of Label Studio's ML backend protocol, plus the admin reload route."""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from illume.errors import IllumeError
from illume.labelstudio.candidates import assign_aliases, stored_tasks, write_candidates
from illume.labelstudio import task as task_io
from illume.request_guard import RequestGuard
from ml_backend.batcher import Batcher, BatchResult, QueueFull
from ml_backend.connections import install_accept_error_log
from ml_backend.model_holder import ModelHolder, processor_side
from ml_backend.settings import Settings
from illume.training_runs import TrainingRuns

log = logging.getLogger("ml_backend")
WRITE_WORKERS = 8  # concurrent candidate writes into Label Studio per request
LOGGED_REFUSALS = 10  # per request; every refusal's reason is in the response
MAX_LABEL_CONFIG_CHARS = 100_000  # parsed configs are cached: bound what the cache may hold
MAX_PATH_CHARS = 4096  # /reload's model and adapter (PATH_MAX on Linux)
LISTED_IDS = 10  # repeated task ids named in a refusal
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class SetupRequest(Open):
    project: str | int | None = None
    schema_: str | None = Field(default=None, alias="schema")
    hostname: str | None = None
    access_token: str | None = None
    extra_params: Any = None


class SetupResponse(BaseModel):
    model_version: str


class PredictRequest(Open):
    tasks: list[Any]  # checked one by one: a malformed task fails alone
    project: str | int | None = None
    label_config: str | None = None
    params: dict[str, Any] | None = None


class Prediction(BaseModel):
    result: list[dict[str, Any]]
    score: float
    model_version: str
    error: str | None = None  # why this task got no candidates (absent when it got them)


class PredictResponse(BaseModel):
    results: list[Prediction]


class WebhookRequest(Open):
    action: str
    project: Any = None


class WebhookResponse(BaseModel):
    status: str
    detail: str | None = None
    round: int | None = None


class ReloadRequest(BaseModel):
    model: str = Field(max_length=MAX_PATH_CHARS)
    adapter: str | None = Field(default=None, max_length=MAX_PATH_CHARS)
    version: str | None = Field(default=None, max_length=200)


class ReloadStatusResponse(BaseModel):
    state: str
    model: str | None
    adapter: str | None
    version: str | None
    error: str | None
    serving_version: str


class HealthResponse(BaseModel):
    status: str
    model_version: str
    model_class: str = "IllumeRationales"


def create_app(settings: Settings, holder: ModelHolder | None = None) -> FastAPI:
    """The app, with one model loaded now (not per request)."""
    keep_base = settings.sampling.base_share > 0  # the diversity remedy samples with the adapter disabled
    holder = holder or ModelHolder.load(settings.model, settings.adapter, settings.version,
                                        settings.device, settings.dtype, keep_base=keep_base)
    holder.allow_hub_models = settings.allow_hub_models
    holder.keep_base = keep_base
    # decode large images reduced: a batch's memory follows what the processor keeps, not the files
    side = processor_side(holder.current.vlm.processor) if settings.decode_side is None else settings.decode_side
    settings.images.decode_side = side
    log.info("images decoded reduced while their shorter side stays >= %d px" if side else
             "images decoded at full size (no processor size found, or --decode-side 0)", side)

    def run_batch(queries):
        loaded = holder.current  # a swap during this batch does not affect it
        # Each task's draws come from its sampling key (illume.labelstudio.task.sampling_key), not from
        # the batch it lands in: the same task on the same model gets the same candidates.
        return loaded.vlm.sample(queries, settings.sampling), loaded.version

    batcher = Batcher(run_batch, settings.batch_size, settings.queue_size, settings.download_workers,
                      per_host=settings.download_per_host)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        install_accept_error_log(asyncio.get_running_loop())
        yield
        batcher.stop()

    app = FastAPI(title="ILLUME ML backend", lifespan=lifespan)  # its docs routes sit behind RequestGuard
    app.add_middleware(RequestGuard, basic_auth=settings.basic_auth, admin_token=settings.admin_token,
                       max_body_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout_s)
    app.state.settings, app.state.holder, app.state.batcher = settings, holder, batcher

    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:  # on the event loop: never queued behind threads
        return HealthResponse(status="UP", model_version=holder.version)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """Say where the body is wrong without echoing it back (pydantic's errors quote the input)."""
        return JSONResponse({"detail": [{key: error.get(key) for key in ("loc", "msg", "type")}
                                        for error in exc.errors()[:20]]}, status_code=422)

    @app.post("/setup", response_model=SetupResponse)
    async def setup(body: SetupRequest) -> SetupResponse:  # Label Studio calls it often, with a 3 s timeout
        return SetupResponse(model_version=holder.version)

    @app.get("/versions")
    async def versions() -> dict[str, list[str]]:
        return {"versions": [holder.version]}

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True)
    async def predict(body: PredictRequest, request: Request):
        limit = min(settings.max_tasks_per_request, settings.queue_size)
        if len(body.tasks) > limit:
            raise HTTPException(413, f"{len(body.tasks)} tasks in one request, over the limit of {limit}; "
                                     "select fewer tasks")
        if body.label_config and len(body.label_config) > MAX_LABEL_CONFIG_CHARS:
            raise HTTPException(413, f"the labeling config is {len(body.label_config)} characters long, over the "
                                     f"limit of {MAX_LABEL_CONFIG_CHARS}")
        if repeated := _repeated_ids(body.tasks):  # both would write into the same Label Studio task
            more = f" (and {len(repeated) - LISTED_IDS} more)" if len(repeated) > LISTED_IDS else ""
            raise HTTPException(422, f"task ids {', '.join(map(str, repeated[:LISTED_IDS]))}{more} appear more than "
                                     "once in the request; send each task once")
        try:
            fields = task_io.parse_label_config(body.label_config)
        except IllumeError as exc:
            raise HTTPException(422, str(exc)) from exc
        errors: list[str | None] = [None] * len(body.tasks)
        checked = []
        for index, task in enumerate(body.tasks):
            try:
                checked.append((index, task_io.task_query(task, fields, settings.images, settings.max_text_chars)))
            except IllumeError as exc:
                errors[index] = exc.what
            except Exception as exc:  # whatever else a task's data trips: that task only, never the request
                log.exception("task %d of the request could not be checked", index)
                errors[index] = f"the task could not be checked ({type(exc).__name__}: {str(exc)[:200]})"
        try:
            future = batcher.submit([query for _, query in checked],
                                    deadline=time.monotonic() + settings.predict_timeout_s)
        except QueueFull as exc:
            return JSONResponse({"detail": f"busy: {exc}; retry later"}, status_code=503,
                                headers={"Retry-After": str(settings.retry_after_s)})
        sampled = await _wait_or_drop(future, request, batcher)
        results: list[dict[str, Any]] = [task_io.empty_prediction(holder.version) for _ in body.tasks]
        with_candidates = []
        for position, (index, _) in enumerate(checked):
            if sampled.errors[position] is not None:
                errors[index] = sampled.errors[position]
            else:
                with_candidates.append((index, sampled.candidates[position], sampled.versions[position]))
        written = await run_in_threadpool(_finish_tasks, body.tasks, body.project, fields, with_candidates, settings)
        for index, (result, error) in written.items():
            results[index], errors[index] = result, error
        refused = [index for index, error in enumerate(errors) if error is not None]
        for index in refused:
            results[index]["error"] = _printable(errors[index])
        for index in refused[:LOGGED_REFUSALS]:  # a hostile request must not flood the log
            log.warning("%s skipped: %s", task_io.task_name(body.tasks[index]), _one_line(_printable(errors[index])))
        if len(refused) > LOGGED_REFUSALS:
            log.warning("... and %d more tasks of this request skipped (reasons in the response)",
                        len(refused) - LOGGED_REFUSALS)
        return PredictResponse(results=[Prediction(**r) for r in results])

    def annotation_counts(project: str) -> tuple | None:
        """What changes when the project gets annotations ("nothing new to train on" when it does not)."""
        client = settings.label_studio
        if client is None:
            return None
        try:
            found = client.request("GET", f"/api/projects/{int(project)}/", expect=(200,), timeout=5).json()
            if not isinstance(found, dict):  # a proxy's page, say: no counts, so every press trains
                raise ValueError(f"the answer is a JSON {type(found).__name__}, not the project object")
        except Exception as exc:  # Label Studio unreachable: start anyway, the round itself will say
            log.warning("could not read project %s's annotation counts: %s", project, _one_line(str(exc))[:300])
            return None
        return tuple(found.get(key) for key in ("total_annotations_number", "skipped_annotations_number",
                                                "num_tasks_with_annotations", "task_number"))

    training_runs = TrainingRuns(settings.max_training_runs, settings.train_answer_s, annotation_counts)
    app.state.training_runs = training_runs

    # Label Studio 1.23 answers its own "Start training" button with an empty 200 whatever the
    # backend says (ml/api.py MLBackendTrainAPI), and marks the backend "Error" (no predictions)
    # on any HTTP error: so every outcome is a 200 whose `detail` is the sentence for the lead,
    # also logged, and GET /training shows it.
    @app.post("/webhook", response_model=WebhookResponse, response_model_exclude_none=True)
    def webhook(body: WebhookRequest) -> WebhookResponse:
        if body.action != "START_TRAINING":
            return WebhookResponse(status="ignored", detail=f"action {body.action} needs nothing from the backend")
        answer = training_runs.start(settings.train_command, body.model_dump(), {
            "LABEL_STUDIO_URL": settings.label_studio.url if settings.label_studio else None,
            "LABEL_STUDIO_API_KEY": settings.label_studio.api_key if settings.label_studio else None,
            "ILLUME_ADMIN_TOKEN": settings.admin_token})
        log.info("Start training: %s", answer.message)
        return WebhookResponse(status=answer.status, detail=answer.message,
                               round=answer.run.round if answer.run is not None else None)

    @app.get("/training")
    def training() -> dict[str, Any]:
        """What "Start training" runs are doing and what the last ones did (exit code, log)."""
        return training_runs.status()

    @app.post("/reload", response_model=ReloadStatusResponse, status_code=202)
    def reload(body: ReloadRequest) -> ReloadStatusResponse:
        try:
            holder.check_reload(body.model, body.adapter)
        except IllumeError as exc:
            raise HTTPException(422, str(exc)) from exc
        try:
            holder.start_reload(body.model, body.adapter, body.version)
        except IllumeError as exc:
            raise HTTPException(409, str(exc)) from exc
        return reload_status()

    @app.get("/reload", response_model=ReloadStatusResponse)
    def reload_status() -> ReloadStatusResponse:
        status = holder.status
        return ReloadStatusResponse(state=status.state, model=status.model, adapter=status.adapter,
                                    version=status.version, error=status.error, serving_version=holder.version)

    return app


async def _wait_or_drop(future: Future, request: Request, batcher: Batcher) -> BatchResult:
    """The request's results; if its client disconnects first, its waiting tasks are dropped."""
    waiting = asyncio.wrap_future(future)
    while True:
        done, _ = await asyncio.wait({waiting}, timeout=0.5)
        if done:
            return waiting.result()
        if await request.is_disconnected():
            batcher.cancel(future, "the client disconnected")


def _printable(text: str) -> str:
    """Reasons may quote task data: keep them encodable as UTF-8 JSON (lone surrogates escaped)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _one_line(text: str) -> str:
    """A reason as one log line: control characters (a forged newline) escaped."""
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def _repeated_ids(tasks: list[Any]) -> list[int]:
    """The task ids that more than one task of a request carries."""
    counts = Counter(task_io.task_id(task) for task in tasks if isinstance(task, dict))
    return sorted(tid for tid, count in counts.items() if tid is not None and count > 1)


def _finish_tasks(tasks: list[Any], project: Any, fields: task_io.LabelingSchema, sampled: list,
                  settings: Settings) -> dict[int, tuple[dict[str, Any], str | None]]:
    """Predictions for the tasks that got candidates, after writing the candidates into Label Studio.

    Only the candidates field is written, and only into tasks of the project the request names.
    """
    auth = settings.label_studio
    writes = {index: task for index, _, _ in sampled if settings.write_candidates and auth is not None
              and isinstance(task := tasks[index], dict) and task.get("id") is not None}
    stored: dict[int, dict[str, Any]] = {}
    refusal = None
    if writes:
        project_id = task_io.project_id(project)
        ids = {index: task_io.task_id(task) for index, task in writes.items()}
        if project_id is None:
            refusal = f"the request names no project (got {str(project)[:40]!r}), so no candidates are written"
        else:
            try:
                stored = stored_tasks(auth, project_id, sorted({i for i in ids.values() if i is not None}))
            except Exception as exc:  # Label Studio unreachable or refusing
                refusal = f"Label Studio could not list the project's tasks: {exc}"
    def finish(index: int, candidates: list, version: str) -> tuple[dict[str, Any], str | None]:
        task = tasks[index]
        try:
            if refusal:
                raise IllumeError(refusal)
            if index in writes:
                task_id = ids[index]
                if task_id not in stored:
                    raise IllumeError(f"{task_io.task_name(task)} is not a task of project {project_id}, so no "
                                      "candidates are written into it")
                options = write_candidates(auth, task_id, stored[task_id], fields, candidates)
            else:
                options = assign_aliases([c.text for c in candidates], (task.get("data") or {}).get(fields.candidates))
        except Exception as exc:  # Label Studio unreachable or refusing: this task only
            reason = exc.what if isinstance(exc, IllumeError) else f"{type(exc).__name__}: {exc}"
            return task_io.empty_prediction(version), f"candidates not stored: {reason}"
        return task_io.prediction(options, candidates, fields, version, settings.preselect), None

    with ThreadPoolExecutor(WRITE_WORKERS, thread_name_prefix="illume-write") as pool:  # PATCHes concurrently
        futures = {index: pool.submit(finish, index, candidates, version) for index, candidates, version in sampled}
    return {index: future.result() for index, future in futures.items()}
