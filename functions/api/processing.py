"""Manifesting routes (E1): start processing, reprocess one asset, watch progress."""

from __future__ import annotations

from functions.http import Call, Route
from functions.services import services
from shared.models.jobs import ProcessRequest, ReprocessRequest
from shared.models.views import JobView


def process(call: Call) -> JobView:
    body = call.body or ProcessRequest()
    job = services().manifesting.start(
        call.identity,
        call.path["manifest_id"],
        full=body.full,
        overwrite_edited_text=body.overwrite_edited_text,
    )
    return JobView.of(job)


def reprocess(call: Call) -> JobView:
    body = call.body or ReprocessRequest()
    job = services().manifesting.reprocess_asset(
        call.identity,
        call.path["manifest_id"],
        call.path["asset_id"],
        overwrite_edited_text=body.overwrite_edited_text,
    )
    return JobView.of(job)


def progress(call: Call) -> JobView:
    return JobView.of(services().manifesting.latest(call.identity, call.path["manifest_id"]))


def job(call: Call) -> JobView:
    return JobView.of(services().manifesting.get(call.identity, call.path["job_id"]))


ONE = "/manifests/<manifest_id>"
ROUTES = [
    Route("POST", f"{ONE}/process", process,
          "Process the manifest's new images (detection, faces, reverse prompts); 202 + job",
          202, ProcessRequest, response=JobView, tag="manifesting",
          errors=(400, 404, 409, 413, 415, 422), body_required=False),
    Route("POST", f"{ONE}/assets/<asset_id>/reprocess", reprocess,
          "Process one asset again from scratch; 202 + job", 202, ReprocessRequest,
          response=JobView, tag="manifesting", errors=(400, 404, 409, 413, 415, 422),
          body_required=False),
    Route("GET", f"{ONE}/progress", progress, "The manifest's latest processing job",
          response=JobView, tag="manifesting", errors=(404,)),
    Route("GET", "/jobs/<job_id>", job, "A processing job, step by step", response=JobView,
          tag="manifesting", errors=(404,)),
]  # fmt: skip
