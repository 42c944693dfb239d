"""Cloud Functions entry points. Each deploys (and runs locally) as its own function:

- `api`: the REST API (HTTP).
- `on_upload`: google.cloud.storage.object.v1.finalized events of the upload bucket.
- `run_stage`: the Cloud Tasks target that runs pipeline stages.
"""

from __future__ import annotations

import json
import logging

import flask
import functions_framework
from cloudevents.http.event import CloudEvent
from pydantic import BaseModel, ConfigDict, ValidationError
from werkzeug.exceptions import HTTPException

from functions.api.app import api_app
from functions.services import services

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("framefork.functions")


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
    return api_app()(request)


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
    outcome = services().pipeline.run(task)
    if outcome is StageOutcome.NOT_READY:
        # Retried later like any non-2xx; not 503 or 429, which make Cloud Tasks slow the
        # whole queue down.
        return answer(425, {"outcome": outcome.value})
    return answer(200, {"outcome": outcome.value})


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
