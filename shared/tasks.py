"""Task dispatch: Cloud Tasks delivers work (manifesting jobs, pipeline stages) over HTTP,
at least once. Handlers are idempotent; the task name deduplicates enqueues where Cloud Tasks
can (the emulator does not, which the handlers tolerate)."""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from google.api_core import exceptions as gexc
from google.protobuf import duration_pb2, timestamp_pb2
from pydantic import BaseModel

from shared.deadlines import grpc_call
from shared.settings import Settings, get_settings

if TYPE_CHECKING:  # the client library takes a tenth of a second to import: not on cold start
    from google.cloud import tasks_v2

DISPATCH_DEADLINE_S = 1800


class TaskDispatcher(Protocol):
    def enqueue(
        self, queue: str, url: str, payload: BaseModel, *, task_id: str, delay_s: float = 0
    ) -> None:
        """Queues one POST of the JSON payload to url. A task_id already queued is a no-op."""


class CloudTasksDispatcher:
    def __init__(self, client: tasks_v2.CloudTasksClient, settings: Settings) -> None:
        self._client = client
        self._project = settings.project_id
        self._location = settings.tasks.location
        self._invoker = settings.tasks.invoker_service_account

    def queue_path(self, queue: str) -> str:
        path: str = self._client.queue_path(self._project, self._location, queue)
        return path

    def enqueue(
        self, queue: str, url: str, payload: BaseModel, *, task_id: str, delay_s: float = 0
    ) -> None:
        from google.cloud import tasks_v2

        request: dict[str, Any] = {
            "http_method": tasks_v2.HttpMethod.POST,
            "url": url,
            "headers": {"Content-Type": "application/json"},
            "body": payload.model_dump_json().encode(),
        }
        if self._invoker:
            # Cloud Run / Functions targets check this token; the emulator ignores it.
            request["oidc_token"] = {"service_account_email": self._invoker}
        task: dict[str, Any] = {
            "name": f"{self.queue_path(queue)}/tasks/{task_id}",
            "http_request": request,
            # The longest Cloud Tasks allows for HTTP targets: a manifesting job may take
            # minutes, and a shorter deadline would have it delivered again while it runs.
            "dispatch_deadline": duration_pb2.Duration(seconds=DISPATCH_DEADLINE_S),
        }
        if delay_s > 0:
            at = timestamp_pb2.Timestamp()
            at.FromDatetime(datetime.now(UTC) + timedelta(seconds=delay_s))
            task["schedule_time"] = at
        # A task of that name queued before is fine: delivery is at least once anyway.
        with contextlib.suppress(gexc.AlreadyExists):
            self._client.create_task(
                parent=self.queue_path(queue), task=tasks_v2.Task(**task), **grpc_call()
            )


@lru_cache(maxsize=1)
def default_dispatcher() -> TaskDispatcher:
    from google.cloud import tasks_v2

    emulator = os.environ.get("CLOUD_TASKS_EMULATOR_HOST")
    if emulator:
        import grpc
        from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

        channel = grpc.insecure_channel(emulator)
        client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    else:
        client = tasks_v2.CloudTasksClient()
    return CloudTasksDispatcher(client, get_settings())
