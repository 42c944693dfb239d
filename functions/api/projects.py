"""Project routes (G1, G2): generate, list, get, stop, resume, rename, delete, download."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from functions.api.media import media_redirect
from functions.http import Call, Reply, Route
from functions.services import services
from shared.errors import NotFound
from shared.models.common import Name, QueryParams, RequestBody
from shared.models.projects import (
    GenerateRequest,
    Project,
    ProjectStatus,
    ResumeRequest,
    Scene,
    SceneIdentity,
)


class ProjectView(BaseModel):
    id: str
    name: str
    prompt: str
    style: str | None
    aspect_ratio: str
    clip_seconds: int
    total_seconds: int
    scene_count: int
    audio: bool
    text_model: str
    image_model: str
    video_model: str
    run_through: str
    auto_continue: bool
    take_seed: int
    """Give it to /generate to reproduce this take (what exists is then reused)."""
    status: str
    stage: str | None
    stages_done: list[str]
    error: dict[str, Any] | None
    requeues: int
    """Times the current stage was queued again after its worker died or its task was lost."""
    manifest_id: str | None
    snapshot_id: str | None
    manifest_version: int | None
    forked_from: str | None
    forked_from_checkpoint: str | None
    awaiting: list[str]
    """A fork's assets whose images it still waits for, until awaiting_until."""
    awaiting_until: datetime | None
    fork_job_id: str | None
    """The manifesting job of a fork's new images."""
    branch: str
    current_checkpoint_id: str | None
    cost: dict[str, Any]
    identity_review: list[int]
    """Scenes whose keyframes failed their identity check (below the threshold after the
    re-rolls, or showing someone else), or could not be checked: look at them first."""
    video_url: str | None
    final_video_reused_from: dict[str, str] | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, project: Project) -> ProjectView:
        data = project.model_dump(mode="json", exclude={"owner_id", "run", "is_deleted"})
        video = f"/projects/{project.id}/video" if project.final_video_object else None
        return cls.model_validate({**data, "video_url": video})


class SceneView(BaseModel):
    index: int
    title: str
    description: str
    shot_type: str
    keyframe_prompt: str
    end_keyframe_prompt: str
    motion_prompt: str
    asset_tags: list[str]
    remapped_tags: dict[str, str]
    reference_asset_ids: list[str]
    keyframe_state: str
    clip_state: str
    error: str | None
    cost_usd: float
    bases: dict[str, str]
    """The digest of the inputs each artifact was made from."""
    reused_from: dict[str, dict[str, str]]
    """Artifacts taken from the index at no cost, with the project and checkpoint that made them."""
    identity: SceneIdentity | None
    """The identity check of its keyframes: per character the similarity and the verdict,
    per keyframe the faces found and the re-rolls; None until they are checked."""
    start_frame_url: str | None
    end_frame_url: str | None
    clip_url: str | None

    @classmethod
    def of(cls, project_id: str, scene: Scene, checkpoint_id: str | None = None) -> SceneView:
        """Links to the project as it stands, or to one checkpoint's own files."""
        at = f"/checkpoints/{checkpoint_id}" if checkpoint_id else ""
        base = f"/projects/{project_id}{at}/scenes/{scene.index}"
        data = scene.model_dump(mode="json")
        return cls.model_validate(
            {
                **data,
                "start_frame_url": f"{base}/start-frame" if scene.start_frame_object else None,
                "end_frame_url": f"{base}/end-frame" if scene.end_frame_object else None,
                "clip_url": f"{base}/clip" if scene.clip_object else None,
            }
        )


class ProjectDetail(BaseModel):
    project: ProjectView
    scenes: list[SceneView]


class ProjectPage(BaseModel):
    items: list[ProjectView]
    next_cursor: str | None


class ProjectListQuery(QueryParams):
    status: ProjectStatus | None = None
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=200)


class EstimateView(BaseModel):
    """List-price cost of a run before it starts, by stage (USD)."""

    storyboard: float
    keyframes: float
    clips: float
    total: float


class RenameRequest(RequestBody):
    name: Name


def _project(call: Call) -> Project:
    return services().projects.owned(call.identity, call.path["project_id"])


def generate(call: Call) -> ProjectView:
    return ProjectView.of(services().projects.generate(call.identity, call.body))


def estimate_cost(call: Call) -> EstimateView:
    from shared.pipeline.projects import estimate

    body: GenerateRequest = call.body
    asset_count = 0
    if body.manifest_id:
        asset_count = (
            services().registry.owned_manifest(call.identity, body.manifest_id).asset_count
        )
    cost = estimate(body, asset_count)
    return EstimateView(
        storyboard=round(cost.storyboard, 4), keyframes=round(cost.keyframes, 4),
        clips=round(cost.clips, 4), total=round(cost.total, 4),
    )  # fmt: skip


def list_(call: Call) -> ProjectPage:
    query: ProjectListQuery = call.query
    items, cursor = services().projects.list(call.identity, query.status, query.limit, query.cursor)
    return ProjectPage(items=[ProjectView.of(p) for p in items], next_cursor=cursor)


def get(call: Call) -> ProjectDetail:
    project, scenes = services().projects.detail(call.identity, call.path["project_id"])
    return ProjectDetail(
        project=ProjectView.of(project), scenes=[SceneView.of(project.id, s) for s in scenes]
    )


def stop(call: Call) -> ProjectView:
    return ProjectView.of(services().projects.stop(call.identity, call.path["project_id"]))


def resume(call: Call) -> ProjectView:
    return ProjectView.of(
        services().projects.resume(call.identity, call.path["project_id"], call.body)
    )


class StatusView(BaseModel):
    """A project's progress in a few fields (clients may also listen to its document)."""

    status: str
    stage: str | None
    stages_done: list[str]
    branch: str
    error: dict[str, Any] | None
    scenes: int
    keyframes_done: int
    clips_done: int
    spent_usd: float


def status(call: Call) -> StatusView:
    project, scenes = services().projects.detail(call.identity, call.path["project_id"])
    return StatusView(
        status=project.status.value,
        stage=project.stage.value if project.stage else None,
        stages_done=[s.value for s in project.stages_done],
        branch=project.branch,
        error=project.error.model_dump(mode="json") if project.error else None,
        scenes=len(scenes),
        keyframes_done=sum(1 for s in scenes if s.keyframe_state == "done"),
        clips_done=sum(1 for s in scenes if s.clip_state == "done"),
        spent_usd=project.cost.spent_usd,
    )


def rename(call: Call) -> ProjectView:
    body: RenameRequest = call.body
    return ProjectView.of(
        services().projects.rename(call.identity, call.path["project_id"], body.name)
    )


def delete(call: Call) -> Reply:
    services().projects.delete(call.identity, call.path["project_id"])
    return Reply(204)


def video(call: Call) -> Reply:
    project = _project(call)
    if project.final_video_object is None:
        raise NotFound(f"project {project.id} has no finished video yet")
    return media_redirect(project.final_video_object)


def _scene_media(call: Call, field: str) -> Reply:
    project, scenes = services().projects.detail(call.identity, call.path["project_id"])
    index = int(call.path["index"])
    scene = next((s for s in scenes if s.index == index), None)
    name = getattr(scene, field) if scene else None
    if name is None:
        raise NotFound(f"scene {index} of project {project.id} has no such file yet")
    return media_redirect(name)


def start_frame(call: Call) -> Reply:
    return _scene_media(call, "start_frame_object")


def end_frame(call: Call) -> Reply:
    return _scene_media(call, "end_frame_object")


def clip(call: Call) -> Reply:
    return _scene_media(call, "clip_object")


ONE = "/projects/<project_id>"
SCENE = f"{ONE}/scenes/<int:index>"
ROUTES = [
    Route("POST", "/generate", generate, "Start a video from a prompt (and a READY manifest); 202",
          202, GenerateRequest, response=ProjectView, tag="projects",
          errors=(400, 404, 409, 413, 415, 422)),
    Route("POST", "/generate/estimate", estimate_cost,
          "What a generate with these settings would cost at list prices", body=GenerateRequest,
          response=EstimateView, tag="projects", errors=(400, 404, 413, 415, 422)),
    Route("GET", "/projects", list_, "List your projects, newest first", query=ProjectListQuery,
          response=ProjectPage, tag="projects", errors=(400, 422)),
    Route("GET", ONE, get, "A project with its scenes", response=ProjectDetail, tag="projects",
          errors=(404,)),
    Route("PATCH", ONE, rename, "Rename a project", body=RenameRequest, response=ProjectView,
          tag="projects", errors=(400, 404, 413, 415, 422)),
    Route("DELETE", ONE, delete, "Delete a project (a running one is stopped)", 204,
          tag="projects", errors=(404,)),
    Route("POST", f"{ONE}/stop", stop, "Stop a running project", response=ProjectView,
          tag="projects", errors=(404, 409)),
    Route("POST", f"{ONE}/resume", resume,
          "Resume a stopped, failed or staged project from its first unfinished stage, "
          "optionally with other models", body=ResumeRequest, response=ProjectView,
          tag="projects", errors=(400, 404, 409, 413, 415, 422), body_required=False),
    Route("GET", f"{ONE}/status", status, "A project's progress", response=StatusView,
          tag="projects", errors=(404,)),
    Route("GET", f"{ONE}/video", video, "Redirect to the finished video", 302, tag="projects",
          errors=(404,)),
    Route("GET", f"{SCENE}/start-frame", start_frame, "Redirect to a scene's first keyframe", 302,
          tag="projects", errors=(404,)),
    Route("GET", f"{SCENE}/end-frame", end_frame, "Redirect to a scene's last keyframe", 302,
          tag="projects", errors=(404,)),
    Route("GET", f"{SCENE}/clip", clip, "Redirect to a scene's clip", 302, tag="projects",
          errors=(404,)),
]  # fmt: skip
