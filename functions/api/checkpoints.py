"""Checkpoint routes (C1–C4): the tree, branches, edits per stage, continue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from werkzeug.exceptions import RequestEntityTooLarge

from functions.api.media import media_redirect
from functions.api.projects import ProjectView, SceneView
from functions.http import Call, Reply, Route
from functions.services import services
from shared.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from shared.models.checkpoints import (
    Checkpoint,
    ClipRegenerate,
    ContinueRequest,
    Draft,
    KeyframeRegenerate,
    SceneEdit,
    scenes_with_draft,
)
from shared.models.common import QueryParams
from shared.models.projects import Project, Scene
from shared.pipeline.plans import Plan


class CheckpointView(BaseModel):
    id: str
    stage: str
    branch: str
    parent_id: str | None
    stages_done: list[str]
    artifacts: dict[str, Any]
    is_current: bool
    depth: int = 0
    """How many checkpoints lie between this one and the project's first."""
    children: list[str] = Field(default_factory=list)
    video_url: str | None = None
    identity_review: list[int] = Field(default_factory=list)
    """Scenes whose keyframes failed their identity check or could not be checked, as the
    stage left them."""
    created_at: datetime

    @classmethod
    def of(
        cls, checkpoint: Checkpoint, project: Project, tree: list[Checkpoint] | None = None
    ) -> CheckpointView:
        by_id = {c.id: c for c in tree or []}
        depth, parent = 0, checkpoint.parent_id
        while parent in by_id and depth <= len(by_id):
            depth, parent = depth + 1, by_id[parent].parent_id
        video = (
            f"/projects/{project.id}/checkpoints/{checkpoint.id}/video"
            if checkpoint.final_video_object else None
        )  # fmt: skip
        return cls(
            id=checkpoint.id, stage=checkpoint.stage.value, branch=checkpoint.branch,
            parent_id=checkpoint.parent_id, stages_done=[s.value for s in checkpoint.stages_done],
            artifacts=checkpoint.artifacts(),
            is_current=checkpoint.id == project.current_checkpoint_id,
            depth=depth, children=[c.id for c in tree or [] if c.parent_id == checkpoint.id],
            video_url=video, identity_review=checkpoint.identity_review,
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


class PendingView(BaseModel):
    scene: int
    frame: str
    version: int


class CheckpointDetail(BaseModel):
    checkpoint: CheckpointView
    scenes: list[SceneView]
    """As they would continue: the checkpoint's scenes with the pending edits applied; links
    are the checkpoint's own files."""
    edited: bool
    redo_clips: list[int]
    pending: list[PendingView]
    """Keyframe regenerations still being made: a continue waits for them."""
    failed: list[str]
    identity_review: list[int]
    """Scenes to look at as they would continue: the stage's flags, and those of keyframes
    uploaded or regenerated in the draft."""

    @classmethod
    def of(cls, project: Project, checkpoint: Checkpoint, draft: Draft) -> CheckpointDetail:
        views = []
        for scene in scenes_with_draft(checkpoint, draft):
            view = SceneView.of(project.id, scene, checkpoint.id)
            edited = draft.scenes.get(str(scene.index), {})
            for field, url in (("start_frame_object", "start_frame_url"),
                               ("end_frame_object", "end_frame_url")):  # fmt: skip
                if field in edited and getattr(view, url):
                    setattr(view, url, f"{getattr(view, url)}?draft=true")
            views.append(view)
        return cls(
            checkpoint=CheckpointView.of(checkpoint, project),
            scenes=views,
            edited=draft.edited, redo_clips=draft.redo_clips,
            pending=[PendingView.model_validate(p.model_dump()) for p in draft.pending],
            failed=draft.failed,
            identity_review=[v.index for v in views if v.identity and v.identity.review],
        )  # fmt: skip


class EditView(SceneView):
    version: int
    """The version of the artifact this edit made (version 1 is what the stage made)."""

    @classmethod
    def made(cls, project_id: str, checkpoint_id: str, edited: tuple[Scene, int]) -> EditView:
        scene, version = edited
        view = SceneView.of(project_id, scene, checkpoint_id)
        return cls.model_validate({**view.model_dump(), "version": version})


class ContinueView(ProjectView):
    plan: Plan
    """What the continue reuses and makes; the ledger agrees with it afterwards."""


class TreeQuery(QueryParams):
    branch: str | None = Field(default=None, max_length=200)


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
    query: TreeQuery = call.query
    shown = [c for c in checkpoints if query.branch in (None, c.branch)]
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
        items=[CheckpointView.of(c, project, checkpoints) for c in shown],
    )


def detail(call: Call) -> CheckpointDetail:
    return CheckpointDetail.of(*services().checkpoints.get(call.identity, *_ids(call)))


def current(call: Call) -> CheckpointDetail:
    return CheckpointDetail.of(
        *services().checkpoints.current(call.identity, call.path["project_id"])
    )


def plan(call: Call) -> Plan:
    return services().checkpoints.plan(call.identity, *_ids(call))


class MediaQuery(QueryParams):
    draft: bool = False
    """The version the checkpoint's pending edits put in place of its own."""


def _media(call: Call, what: str) -> Reply:
    query: MediaQuery = call.query or MediaQuery()
    index = call.path.get("index")
    return media_redirect(
        services().checkpoints.media(call.identity, *_ids(call), index, what, draft=query.draft)
    )


def start_frame(call: Call) -> Reply:
    return _media(call, "start-frame")


def end_frame(call: Call) -> Reply:
    return _media(call, "end-frame")


def clip(call: Call) -> Reply:
    return _media(call, "clip")


def video(call: Call) -> Reply:
    return _media(call, "video")


def edit_scene(call: Call) -> EditView:
    edited = services().checkpoints.edit_scene(call.identity, *_ids(call), _index(call), call.body)
    return EditView.made(*_ids(call), edited)


def regenerate_keyframe(call: Call) -> EditView:
    body = call.body or KeyframeRegenerate()
    edited = services().checkpoints.regenerate_keyframe(
        call.identity, *_ids(call), _index(call), body
    )
    return EditView.made(*_ids(call), edited)


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
    edited = services().checkpoints.upload_keyframe(
        call.identity, *_ids(call), _index(call), frame, part.read(limit + 1)
    )
    return EditView.made(*_ids(call), edited)


def regenerate_clip(call: Call) -> EditView:
    body = call.body or ClipRegenerate()
    edited = services().checkpoints.regenerate_clip(call.identity, *_ids(call), _index(call), body)
    return EditView.made(*_ids(call), edited)


def continue_(call: Call) -> ContinueView:
    body = call.body or ContinueRequest()
    project, planned = services().checkpoints.continue_from(
        call.identity, *_ids(call), auto_continue=body.auto_continue, new_branch=body.new_branch
    )
    return ContinueView.model_validate({**ProjectView.of(project).model_dump(), "plan": planned})


def versions(call: Call) -> VersionList:
    found = services().checkpoints.versions(call.identity, call.path["project_id"])
    return VersionList(items=[VersionView.model_validate(v.model_dump(mode="json")) for v in found])


PROJECT = "/projects/<project_id>"
ONE = f"{PROJECT}/checkpoints/<checkpoint_id>"
SCENE = f"{ONE}/scenes/<int:index>"
EDIT_ERRORS = (400, 404, 409, 413, 415, 422)
ROUTES = [
    Route("GET", f"{PROJECT}/checkpoints", tree,
          "The checkpoint tree (each with its depth and children), the branches and the "
          "current checkpoint; ?branch= lists one branch", query=TreeQuery,
          response=CheckpointTree, tag="checkpoints", errors=(404, 422)),
    Route("GET", f"{PROJECT}/checkpoints/current", current, "The current checkpoint",
          response=CheckpointDetail, tag="checkpoints", errors=(404,)),
    Route("GET", f"{ONE}/plan", plan,
          "What a continue from here would reuse and make, and its cost at list prices",
          response=Plan, tag="checkpoints", errors=(404,)),
    Route("GET", f"{ONE}/video", video, "Redirect to this checkpoint's final video", 302,
          tag="checkpoints", errors=(404,)),
    Route("GET", f"{SCENE}/start-frame", start_frame,
          "Redirect to this checkpoint's first keyframe of a scene (?draft=true: the edited one)",
          302, query=MediaQuery, tag="checkpoints", errors=(404, 422)),
    Route("GET", f"{SCENE}/end-frame", end_frame,
          "Redirect to this checkpoint's last keyframe of a scene (?draft=true: the edited one)",
          302, query=MediaQuery, tag="checkpoints", errors=(404, 422)),
    Route("GET", f"{SCENE}/clip", clip, "Redirect to this checkpoint's clip of a scene", 302,
          tag="checkpoints", errors=(404,)),
    Route("GET", f"{PROJECT}/versions", versions, "Every edited version of every artifact",
          response=VersionList, tag="checkpoints", errors=(404,)),
    Route("GET", ONE, detail, "A checkpoint with its scenes and pending edits",
          response=CheckpointDetail, tag="checkpoints", errors=(404,)),
    Route("PATCH", SCENE, edit_scene, "Edit a scene's storyboard fields (storyboard checkpoint)",
          body=SceneEdit, response=EditView, tag="checkpoints", errors=EDIT_ERRORS),
    Route("POST", f"{SCENE}/keyframe", upload_keyframe,
          "Replace a keyframe with an uploaded image (keyframes checkpoint)",
          response=EditView, tag="checkpoints", raw_body="multipart/form-data",
          errors=EDIT_ERRORS),
    Route("POST", f"{SCENE}/keyframe/regenerate", regenerate_keyframe,
          "Regenerate a keyframe, optionally with a new prompt (keyframes checkpoint): queued; "
          "the checkpoint shows it pending until it is made", 202, body=KeyframeRegenerate, response=EditView, tag="checkpoints", errors=EDIT_ERRORS,
          body_required=False),
    Route("POST", f"{SCENE}/clip/regenerate", regenerate_clip,
          "Have a clip made again on continue (clips checkpoint)", body=ClipRegenerate,
          response=EditView, tag="checkpoints", errors=EDIT_ERRORS, body_required=False),
    Route("POST", f"{ONE}/continue", continue_,
          "Continue from a checkpoint: an edited one starts a new branch; answers the plan",
          202, ContinueRequest, response=ContinueView, tag="checkpoints",
          errors=(400, 404, 409, 413, 415, 422), body_required=False),
]  # fmt: skip
