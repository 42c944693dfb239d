"""Cloud Functions entry points. Each deploys (and runs locally) as its own function:

- `api`: the REST API (HTTP).
- `on_upload`: google.cloud.storage.object.v1.finalized events of the upload bucket.
- `run_stage`: the Cloud Tasks target that runs pipeline stages.
- `sweep`: the Cloud Scheduler target that queues stuck work again.
"""

from __future__ import annotations

import json
import logging
import time
from functools import lru_cache
from typing import Any

import flask
import functions_framework
from cloudevents.http.event import CloudEvent
from pydantic import BaseModel, ConfigDict, ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule

from functions.api.app import api_app
from functions.http import ID_SHAPE
from functions.services import services
from shared import logs
from shared.settings import get_settings

# JSON lines in Cloud Logging's format, or text with FRAMEFORK_LOG_FORMAT=text: chosen on the
# first line written, not here (shared/logs.py).
logs.configure()
log = logging.getLogger("framefork.functions")
requests_log = logging.getLogger("framefork.functions.requests")

PATH_IDS = {"manifest_id": "manifest_id", "project_id": "project_id", "job_id": "job_id",
            "index": "scene"}  # fmt: skip
"""Path parameters that name what a request works on, and the log field each becomes."""


@lru_cache(maxsize=1)
def _route_map() -> Map:
    """The API's rules, matched once more only to name a request's route in its log line."""
    routes = api_app().routes
    return Map(
        [Rule(r.path, methods=[r.method], endpoint=r.path) for r in routes], strict_slashes=False
    )


def _route_of(request: flask.Request) -> tuple[str | None, dict[str, Any]]:
    try:
        rule, path = _route_map().bind("api", path_info=request.path).match(method=request.method)
    except HTTPException:  # no such path or method: answered 404 or 405 by the API
        return None, {}
    # Only ids of the shape this API issues: another answers 404 and names nothing.
    ids = {
        PATH_IDS[k]: v
        for k, v in path.items()
        if k in PATH_IDS and (not k.endswith("_id") or ID_SHAPE.match(str(v)))
    }
    return str(rule), ids


def _client_ip(request: flask.Request) -> str | None:
    forwarded = request.headers.get("X-Forwarded-For", "")
    return forwarded.split(",")[0].strip() or request.remote_addr


def _trace(request: flask.Request) -> dict[str, Any]:
    return logs.trace_fields(request.headers.get(logs.TRACE_HEADER), get_settings().project_id)


@functions_framework.errorhandler(HTTPException)  # type: ignore[untyped-decorator]
def framework_error(error: HTTPException) -> flask.Response:
    """Answers that functions-framework's own routing gives (a path it cannot route, say)
    in the API's one error shape."""
    status = error.code or 500
    body: dict[str, object] = {
        "error": {
            "code": "not_found" if status == 404 else "http_error",
            "message": error.description or error.name,
            "status": status,
            "details": [],
        }
    }
    return flask.Response(json.dumps(body), status=status, mimetype="application/json")


@functions_framework.http
def api(request: flask.Request) -> flask.Response:
    started = time.perf_counter()
    route, ids = _route_of(request)
    status = 500  # what functions-framework answers if the API itself raises
    response: flask.Response | None = None
    with logs.log_context(**_trace(request), **ids):
        try:
            response = api_app()(request)
            status = response.status_code
            return response
        finally:
            logs.request_line(
                requests_log,
                method=request.method,
                route=route,
                url=request.url,
                status=status,
                latency_s=time.perf_counter() - started,
                user_agent=request.user_agent.string or None,
                remote_ip=_client_ip(request),
                request_size=request.content_length,
                response_size=None if response is None else response.calculate_content_length(),
                protocol=request.environ.get("SERVER_PROTOCOL"),
            )


@functions_framework.http
def run_stage(request: flask.Request) -> flask.Response:
    """The Cloud Tasks target of the pipeline: one stage of one project per task."""
    from shared.pipeline.runner import StageOutcome, StageTask

    def answer(status: int, body: dict[str, str]) -> flask.Response:
        return flask.Response(json.dumps(body), status=status, mimetype="application/json")

    try:
        task = StageTask.model_validate_json(request.get_data())
    except ValidationError as error:
        # Recorded in the log and acknowledged: Cloud Tasks would otherwise retry it forever.
        log.error(
            "run_stage: unusable task %s: %s", request.headers.get("X-CloudTasks-TaskName"), error
        )
        return answer(200, {"outcome": "rejected"})
    scene = task.keyframe.scene if task.keyframe else None
    with logs.log_context(
        **_trace(request), project_id=task.project_id, stage=task.stage.value, scene=scene
    ):
        outcome = services().pipeline.run(task)
    if outcome is StageOutcome.NOT_READY:
        # Retried later like any non-2xx; not 503 or 429, which make Cloud Tasks slow the
        # whole queue down.
        return answer(425, {"outcome": outcome.value})
    return answer(200, {"outcome": outcome.value})


@functions_framework.http
def sweep(request: flask.Request) -> flask.Response:
    """Run by Cloud Scheduler every minute (the local stack: on a timer). Stuck work ends by
    itself: jobs and stages whose worker died or whose task was lost are queued again, and
    failed, naming why, after tasks.max_requeues. Idempotent: sweeps may overlap."""
    with logs.log_context(**_trace(request)):
        found = services()
        jobs = found.manifesting.requeue_stuck(found.settings.models.job_lease_s)
        stages = found.pipeline.requeue_stuck()
    report = {"jobs_requeued": jobs[0], "jobs_failed": jobs[1],
              "stages_requeued": stages[0], "stages_failed": stages[1]}  # fmt: skip
    if any(report.values()):
        log.warning("sweep: %s", report)
    return flask.Response(json.dumps(report), status=200, mimetype="application/json")


class StorageObjectData(BaseModel):
    """The part of a Cloud Storage object resource that the trigger reads."""

    model_config = ConfigDict(extra="ignore")
    bucket: str
    name: str
    generation: str
    size: int = 0


@functions_framework.cloud_event
def on_upload(event: CloudEvent) -> None:
    # A payload that can never be handled is logged and acknowledged: raising would make
    # Eventarc redeliver it forever. Everything else that raises is worth a retry.
    try:
        data = StorageObjectData.model_validate(event.get_data() or {})
    except ValidationError as error:
        log.error("on_upload: unusable event %s: %s", event.get("id"), error)
        return
    outcome = services().uploads.ingest(data.bucket, data.name, data.generation, data.size)
    log.info(
        "on_upload %s gen %s: %s (%s)", data.name, data.generation, outcome.status, outcome.detail
    )
