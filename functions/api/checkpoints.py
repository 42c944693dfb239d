"""Checkpoint routes (C1–C4): the tree, branches, edits per stage, continue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from werkzeug.exceptions import RequestEntityTooLarge

from functions.api.projects import ProjectView, SceneView
from functions.http import Call, Route
from functions.services import services
from shared.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from shared.models.checkpoints import (
    Checkpoint,
    ClipRegenerate,
    ContinueRequest,
    KeyframeRegenerate,
    SceneEdit,
)
from shared.models.projects import Project
from shared.pipeline.checkpoints import scenes_with_draft


class CheckpointView(BaseModel):
    id: str
    stage: str
    branch: str
    parent_id: str | None
    stages_done: list[str]
    artifacts: dict[str, Any]
    is_current: bool
    created_at: datetime

    @classmethod
    def of(cls, checkpoint: Checkpoint, project: Project) -> CheckpointView:
        return cls(
            id=checkpoint.id, stage=checkpoint.stage.value, branch=checkpoint.branch,
            parent_id=checkpoint.parent_id, stages_done=[s.value for s in checkpoint.stages_done],
            artifacts=checkpoint.artifacts(),
            is_current=checkpoint.id == project.current_checkpoint_id,
            created_at=checkpoint.created_at,
        )  # fmt: skip


class BranchView(BaseModel):
    name: str
    parent: str | None
    from_checkpoint: str | None
    checkpoints: int


class CheckpointTree(BaseModel):
    """Every checkpoint with its parent: a tree across branches, oldest first."""

    current_checkpoint_id: str | None
    branch: str
    branches: list[BranchView]
    items: list[CheckpointView]


class CheckpointDetail(BaseModel):
    checkpoint: CheckpointView
    scenes: list[SceneView]
    """As they would continue: the checkpoint's scenes with the pending edits applied."""
    edited: bool
    redo_clips: list[int]


class VersionView(BaseModel):
    id: str
    checkpoint_id: str
    scene: int
    kind: str
    version: int
    made_by: str
    fields: dict[str, Any]
    created_at: datetime


class VersionList(BaseModel):
    items: list[VersionView]


def _ids(call: Call) -> tuple[str, str]:
    return call.path["project_id"], call.path["checkpoint_id"]


def _index(call: Call) -> int:
    return int(call.path["index"])  # the route's int converter matched only digits


def tree(call: Call) -> CheckpointTree:
    project, checkpoints = services().checkpoints.tree(call.identity, call.path["project_id"])
    return CheckpointTree(
        current_checkpoint_id=project.current_checkpoint_id,
        branch=project.branch,
        branches=[
            BranchView(
                name=name,
                parent=b.parent,
                from_checkpoint=b.from_checkpoint,
                checkpoints=sum(1 for c in checkpoints if c.branch == name),
            )
            for name, b in sorted(project.branches.items())
        ],
        items=[CheckpointView.of(c, project) for c in checkpoints],
    )


def detail(call: Call) -> CheckpointDetail:
    project_id, checkpoint_id = _ids(call)
    checkpoint, draft = services().checkpoints.get(call.identity, project_id, checkpoint_id)
    project = services().projects.owned(call.identity, project_id)
    return CheckpointDetail(
        checkpoint=CheckpointView.of(checkpoint, project),
        scenes=[SceneView.of(project_id, s) for s in scenes_with_draft(checkpoint, draft)],
        edited=draft.edited,
        redo_clips=draft.redo_clips,
    )


def edit_scene(call: Call) -> SceneView:
    scene = services().checkpoints.edit_scene(call.identity, *_ids(call), _index(call), call.body)
    return SceneView.of(call.path["project_id"], scene)


def regenerate_keyframe(call: Call) -> SceneView:
    body = call.body or KeyframeRegenerate()
    scene = services().checkpoints.regenerate_keyframe(
        call.identity, *_ids(call), _index(call), body
    )
    return SceneView.of(call.path["project_id"], scene)


def upload_keyframe(call: Call) -> SceneView:
    """multipart/form-data: `file`, and `frame` (start or end; start by default)."""
    request = call.request
    limit = services().settings.storage.max_upload_bytes
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType("send the keyframe as multipart/form-data with a part 'file'")
    request.max_content_length = limit + 64 * 1024
    try:
        part = request.files.get("file")
        frame = request.form.get("frame", "start")
    except RequestEntityTooLarge as error:
        raise PayloadTooLarge(f"the upload is larger than {limit} bytes") from error
    if part is None:
        raise BadRequest("the form has no part named 'file'")
    scene = services().checkpoints.upload_keyframe(
        call.identity, *_ids(call), _index(call), frame, part.read(limit + 1)
    )
    return SceneView.of(call.path["project_id"], scene)


def regenerate_clip(call: Call) -> SceneView:
    body = call.body or ClipRegenerate()
    scene = services().checkpoints.regenerate_clip(call.identity, *_ids(call), _index(call), body)
    return SceneView.of(call.path["project_id"], scene)


def continue_(call: Call) -> ProjectView:
    body = call.body or ContinueRequest()
    project = services().checkpoints.continue_from(
        call.identity, *_ids(call), auto_continue=body.auto_continue
    )
    return ProjectView.of(project)


def versions(call: Call) -> VersionList:
    found = services().checkpoints.versions(call.identity, call.path["project_id"])
    return VersionList(items=[VersionView.model_validate(v.model_dump(mode="json")) for v in found])


PROJECT = "/projects/<project_id>"
ONE = f"{PROJECT}/checkpoints/<checkpoint_id>"
SCENE = f"{ONE}/scenes/<int:index>"
EDIT_ERRORS = (400, 404, 409, 413, 415, 422)
ROUTES = [
    Route("GET", f"{PROJECT}/checkpoints", tree,
          "The checkpoint tree, the branches and the current checkpoint",
          response=CheckpointTree, tag="checkpoints", errors=(404,)),
    Route("GET", f"{PROJECT}/versions", versions, "Every edited version of every artifact",
          response=VersionList, tag="checkpoints", errors=(404,)),
    Route("GET", ONE, detail, "A checkpoint with its scenes and pending edits",
          response=CheckpointDetail, tag="checkpoints", errors=(404,)),
    Route("PATCH", SCENE, edit_scene, "Edit a scene's storyboard fields (storyboard checkpoint)",
          body=SceneEdit, response=SceneView, tag="checkpoints", errors=EDIT_ERRORS),
    Route("POST", f"{SCENE}/keyframe", upload_keyframe,
          "Replace a keyframe with an uploaded image (keyframes checkpoint)",
          response=SceneView, tag="checkpoints", raw_body="multipart/form-data",
          errors=EDIT_ERRORS),
    Route("POST", f"{SCENE}/keyframe/regenerate", regenerate_keyframe,
          "Regenerate a keyframe, optionally with a new prompt (keyframes checkpoint)",
          body=KeyframeRegenerate, response=SceneView, tag="checkpoints", errors=EDIT_ERRORS,
          body_required=False),
    Route("POST", f"{SCENE}/clip/regenerate", regenerate_clip,
          "Have a clip made again on continue (clips checkpoint)", body=ClipRegenerate,
          response=SceneView, tag="checkpoints", errors=EDIT_ERRORS, body_required=False),
    Route("POST", f"{ONE}/continue", continue_,
          "Continue from a checkpoint: an edited one starts a new branch", 202,
          ContinueRequest, response=ProjectView, tag="checkpoints",
          errors=(400, 404, 409, 413, 415, 422), body_required=False),
]  # fmt: skip
