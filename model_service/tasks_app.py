"""The Cloud Tasks target that runs manifesting jobs: POST /tasks/run_job {"job_id": ...}.

A plain ASGI app rather than a typed BentoML API, because Cloud Tasks retries every answer
outside 2xx: a payload that can never be valid must be recorded and acknowledged, while
BentoML's own validation would answer 400 and have it retried forever.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared import logs
from shared.clients import firestore_client
from shared.deadlines import grpc_call
from shared.manifesting.engine import RunOutcome
from shared.models.common import utcnow
from shared.models.jobs import JobTask
from shared.settings import get_settings

log = logging.getLogger("framefork.model_service.tasks")
RETRY_AFTER_S = "30"


def record_bad_task(request: Request, body: bytes, reason: str) -> None:
    """Kept for whoever investigates; acknowledged so that it is not delivered forever."""
    log.error("unusable task %s: %s", request.headers.get("X-CloudTasks-TaskName"), reason)
    firestore_client().collection("bad_tasks").add(
        {
            "target": "run_job",
            "task_name": request.headers.get("X-CloudTasks-TaskName"),
            "retry_count": request.headers.get("X-CloudTasks-TaskRetryCount"),
            "body": body[:10_000].decode("utf-8", "replace"),
            "reason": reason[:2_000],
            "at": utcnow(),
        },
        **grpc_call(),
    )


async def run_job(request: Request) -> JSONResponse:
    from model_service.factory import engine

    body = await request.body()
    try:
        task = JobTask.model_validate_json(body)
    except (ValueError, ValidationError) as error:
        await run_in_threadpool(record_bad_task, request, body, str(error))
        return JSONResponse({"outcome": "rejected", "reason": "unusable payload"}, status_code=200)
    trace = logs.trace_fields(request.headers.get(logs.TRACE_HEADER), get_settings().project_id)
    with logs.log_context(job_id=task.job_id, **trace):
        outcome = await run_in_threadpool(engine().run, task.job_id)
    if outcome is RunOutcome.BUSY:
        # Another delivery holds the lease; Cloud Tasks retries with backoff, and the lease
        # expires if that delivery died. Not 503 or 429: those make Cloud Tasks slow the
        # whole queue down, for every manifest.
        return JSONResponse(
            {"outcome": outcome.value}, status_code=409, headers={"Retry-After": RETRY_AFTER_S}
        )
    return JSONResponse({"outcome": outcome.value, "job_id": task.job_id})


tasks_app = Starlette(routes=[Route("/run_job", run_job, methods=["POST"])])
