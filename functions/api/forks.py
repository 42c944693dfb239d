"""Fork routes (F1–F3): preview, fork, and a project's forks."""

from __future__ import annotations

from pydantic import BaseModel

from functions.api.projects import ProjectView
from functions.http import Call, Route
from functions.services import services
from shared.models.forks import ForkRequest
from shared.pipeline.forks import ForkPreview, UploadSlot


class ForkView(ProjectView):
    preview: ForkPreview
    """What the fork reuses and makes, as its preview said; the ledger agrees afterwards."""
    uploads: list[UploadSlot]
    """Where each new upload and replaced image goes; the fork waits for them."""


class ForkList(BaseModel):
    items: list[ProjectView]


def preview(call: Call) -> ForkPreview:
    return services().forks.preview(call.identity, call.path["project_id"], call.body)


def fork(call: Call) -> ForkView:
    project, previewed, slots = services().forks.fork(
        call.identity, call.path["project_id"], call.body
    )
    return ForkView.model_validate(
        {**ProjectView.of(project).model_dump(), "preview": previewed, "uploads": slots}
    )


def list_(call: Call) -> ForkList:
    found = services().forks.forks_of(call.identity, call.path["project_id"])
    return ForkList(items=[ProjectView.of(p) for p in found])


ONE = "/projects/<project_id>/forks"
ERRORS = (400, 404, 409, 413, 415, 422)
ROUTES = [
    Route("POST", f"{ONE}/preview", preview,
          "What a fork with these changes would reuse, make and cost; writes nothing",
          body=ForkRequest, response=ForkPreview, tag="forks", errors=ERRORS),
    Route("POST", ONE, fork,
          "Fork a finished, failed or stopped project with changes: only what they touch is "
          "made again", 202, ForkRequest, response=ForkView, tag="forks", errors=ERRORS),
    Route("GET", ONE, list_, "The project's forks, oldest first", response=ForkList,
          tag="forks", errors=(404,)),
]  # fmt: skip
