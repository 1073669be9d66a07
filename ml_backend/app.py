"""The HTTP routes of Label Studio's ML backend protocol, plus the admin reload route."""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from illume.errors import IllumeError
from ml_backend import tasks as task_io
from ml_backend.auth import check_admin_token, check_basic_auth
from ml_backend.batcher import Batcher, QueueFull
from ml_backend.model_holder import ModelHolder
from ml_backend.settings import Settings
from ml_backend.training_hook import start_training

log = logging.getLogger("ml_backend")


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
    tasks: list[dict[str, Any]]
    project: str | int | None = None
    label_config: str | None = None
    params: dict[str, Any] | None = None


class Prediction(BaseModel):
    result: list[dict[str, Any]]
    score: float
    model_version: str


class PredictResponse(BaseModel):
    results: list[Prediction]


class WebhookRequest(Open):
    action: str
    project: Any = None


class WebhookResponse(BaseModel):
    status: str
    detail: str | None = None


class ReloadRequest(BaseModel):
    model: str
    adapter: str | None = None
    version: str | None = None


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
    holder = holder or ModelHolder.load(settings.model, settings.adapter, settings.version,
                                        settings.device, settings.dtype)

    batches_served = itertools.count()

    def run_batch(queries):
        loaded = holder.current  # a swap during this batch does not affect it
        # Each batch gets its own seed: asking again for the same items (a new labeling round)
        # yields new candidates, while a restarted server replays the same sequence.
        sampling = dataclasses.replace(settings.sampling, seed=settings.sampling.seed + next(batches_served))
        return loaded.vlm.sample(queries, sampling), loaded.version

    batcher = Batcher(run_batch, settings.batch_size, settings.queue_size)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        batcher.stop()

    app = FastAPI(title="ILLUME ML backend", lifespan=lifespan)
    app.state.settings, app.state.holder, app.state.batcher = settings, holder, batcher

    def basic(request: Request) -> None:
        check_basic_auth(request, settings.basic_auth)

    @app.get("/health", response_model=HealthResponse)
    def health() -> HealthResponse:
        return HealthResponse(status="UP", model_version=holder.version)

    @app.post("/setup", response_model=SetupResponse)
    def setup(body: SetupRequest, request: Request) -> SetupResponse:
        basic(request)
        return SetupResponse(model_version=holder.version)

    @app.get("/versions")
    def versions(request: Request) -> dict[str, list[str]]:
        basic(request)
        return {"versions": [holder.version]}

    @app.post("/predict", response_model=PredictResponse)
    async def predict(body: PredictRequest, request: Request):
        basic(request)
        if len(body.tasks) > settings.max_tasks_per_request:
            raise HTTPException(413, f"{len(body.tasks)} tasks in one request, over the limit of "
                                     f"{settings.max_tasks_per_request}; select fewer tasks")
        try:
            fields = task_io.parse_label_config(body.label_config)
        except IllumeError as exc:
            raise HTTPException(422, str(exc)) from exc
        queries = await run_in_threadpool(_load_queries, body.tasks, fields, settings)
        ready = [index for index, query in enumerate(queries) if query is not None]
        try:
            future = batcher.submit([queries[index] for index in ready])
        except QueueFull as exc:
            return JSONResponse({"detail": f"busy: {exc}; retry later"}, status_code=503,
                                headers={"Retry-After": str(settings.retry_after_s)})
        sampled = await asyncio.wrap_future(future)
        results = [task_io.empty_prediction(holder.version) for _ in body.tasks]
        finished = await asyncio.gather(*(  # write the tasks' candidates into Label Studio concurrently
            run_in_threadpool(_finish_task, body.tasks[index], fields, sampled.candidates[position],
                              sampled.versions[position], settings)
            for position, index in enumerate(ready)))
        for index, result in zip(ready, finished):
            results[index] = result
        return PredictResponse(results=[Prediction(**r) for r in results])

    @app.post("/webhook", response_model=WebhookResponse)
    def webhook(body: WebhookRequest, request: Request) -> WebhookResponse:
        basic(request)
        if body.action != "START_TRAINING":
            return WebhookResponse(status="ignored", detail=f"action {body.action} needs nothing from the backend")
        try:
            process = start_training(settings.train_command, body.model_dump())
        except IllumeError as exc:
            log.warning("%s", exc)
            return WebhookResponse(status="not started", detail=str(exc))
        return WebhookResponse(status="started", detail=f"training runs as process {process.pid}")

    @app.post("/reload", response_model=ReloadStatusResponse, status_code=202)
    def reload(body: ReloadRequest, request: Request) -> ReloadStatusResponse:
        check_admin_token(request, settings.admin_token)
        try:
            holder.start_reload(body.model, body.adapter, body.version)
        except IllumeError as exc:
            raise HTTPException(409, str(exc)) from exc
        return reload_status(request)

    @app.get("/reload", response_model=ReloadStatusResponse)
    def reload_status(request: Request) -> ReloadStatusResponse:
        check_admin_token(request, settings.admin_token)
        status = holder.status
        return ReloadStatusResponse(state=status.state, model=status.model, adapter=status.adapter,
                                    version=status.version, error=status.error, serving_version=holder.version)

    return app


def _load_queries(tasks: list[dict[str, Any]], fields: task_io.ConfigFields, settings: Settings) -> list:
    """A query per task, or None (with the reason logged) for a task that cannot be predicted."""
    queries = []
    for task in tasks:
        try:
            queries.append(task_io.task_query(task, fields, settings.images))
        except IllumeError as exc:
            log.warning("task %s skipped: %s", task.get("id"), exc)
            queries.append(None)
    return queries


def _finish_task(task: dict[str, Any], fields: task_io.ConfigFields, candidates, version: str,
                 settings: Settings) -> dict[str, Any]:
    auth = settings.images.label_studio
    try:
        if settings.write_candidates and auth is not None and task.get("id") is not None:
            options = task_io.write_candidates(auth, task, fields, candidates)
        else:
            options = task_io.assign_aliases([c.text for c in candidates], task.get("data", {}).get(fields.candidates))
    except Exception as exc:  # Label Studio unreachable or refusing: this task only
        log.warning("task %s: candidates not stored, empty prediction: %s", task.get("id"), exc)
        return task_io.empty_prediction(version)
    return task_io.prediction(options, candidates, fields, version, settings.preselect)
