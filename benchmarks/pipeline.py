"""Wall time and Firestore reads and writes per pipeline stage, against the same media work done
without the pipeline, for projects of 3, 10 and 30 scenes with the local provider; and what a
fork with one scene edited and a continue after one scene edit cost, against the full run.

    .venv/bin/python benchmarks/pipeline.py            # full run: 2 to 4 minutes (8 at most)
    .venv/bin/python benchmarks/pipeline.py --quick    # smoke run: 3 scenes once, under a minute

Starts its own emulators (Firestore, Storage, Cloud Tasks) under .local/bench-pipeline and runs
the stages in this process, as the run_stage function would: `services().pipeline.run(task)`
for each stage task, which a recording dispatcher keeps instead of sending it to Cloud Tasks.
Each project uses a READY manifest of four assets with photos (two characters, a prop, a
place), so keyframes are composed from reference crops read from Storage, as in the product.

Per stage it records wall time; Firestore documents read and written (counted by
tests/support/firestore_counter.py, which wraps the google-cloud-firestore client in this
process, and which tests/integration/test_firestore_ops_per_scene.py uses to assert that they
grow no faster than the scenes), cross-checked against the RPCs the client sent; Storage gets
and puts; and how the wall time splits into model work (the providers), Firestore, Storage and
the rest (orchestration: validation, copies, hashing, event loops).

The baseline, measured in the same run right beside each project, is the same media work
without the pipeline: the local storyboard model and scene placement, then the same keyframes
(same prompts, seeds and reference images, held in memory), the same clips and the same stitch,
calling the local providers directly. Its output is checked to be byte-identical to what the
pipeline stored, so pipeline ÷ baseline is the pipeline's overhead: Firestore, Storage and
orchestration. Projects get a fixed take seed, so the baseline sends the very seeds they do.

The continue scenario, on the largest size's project of each repeat once it is finished: one
scene's two keyframe prompts edited at the storyboard checkpoint, the plan read, and a continue with
auto_continue, its stage tasks delivered the same way. Model calls are counted by kind (by
wrapping the providers), with wall time, Firestore reads and writes and the plan's reuse and
make totals, beside the full run that made the project. The expected calls are 2 image, 1 video,
1 stitch, 0 text; anything else is listed as a problem (exit status 1).

The fork scenario, on the same finished project just before the continue (a fork only reads
its source): the project forked with the same scene's two keyframe prompts edited in other
words (`services.forks.preview`, then `services.forks.fork`, what POST …/forks/preview and
POST …/forks call), the fork's stage tasks delivered the same way. Measured as the continue
is, against the preview's reuse and make totals; the fork call alone is reported apart.

Prints a table and writes benchmarks/reports/pipeline.md, pipeline.json and pipeline_time.png
(wall time against the scene count); `--out DIR` writes them elsewhere.

    .venv/bin/python benchmarks/pipeline.py --provider genai [--quick]   # 1.5 min; quick: 10 s

`--provider genai` runs the real google-genai providers (gemini-2.5-flash-image, Veo 3 fast)
against tests/support/gemini_standin.py, the storyboard from the local text model, for 3, 10 and
30 scenes (--quick: 3, every latency a tenth): each image call held 2 s, each clip operation
done at its second poll, the runner's delayed poll tasks delivered after their delay (10 s),
the tasks due together delivered at once (a stage's chunks). Per size: wall time, against a sequential run computed from the calls made (calls × latency +
the measured time outside model calls) and the ideal critical path at the concurrency bound;
Firestore reads and writes per scene; peak RSS, and the stitch's against the clips it joins.
Writes reports/pipeline_genai.md and .json.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import io
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    CpuWindow,
    QueuedTasks,
    arguments,
    command_output,
    line_chart,
    machine,
    markdown_table,
    own_stack,
    spread,
    text_table,
    uploaded_manifest,
    use_in_this_process,
    write_atomically,
    write_json,
)
from PIL import Image, ImageDraw

from tests.support.firestore_counter import FirestoreOps, counting, installed

STATE_DIR = ROOT / ".local" / "bench-pipeline"
STAGES = ("storyboard", "keyframes", "clips", "stitch")
CLIP_SECONDS = 2
LONG_SIDE = 640
"""Keyframes (and so clips) of 640×360: a quarter of the pixels of the local model's default
1280×720, which keeps a 30-scene run within the time limit on two cores while every stage still
does its real work (PNG encoding, H.264 encoding, stream-copy stitching)."""
OWNER = "bench-pipeline"
PROMPT = "a lighthouse keeper finds a message in a bottle and sets out to answer it"
TAKE_SEED = 7
"""The project's take seed, fixed (generate draws one at random otherwise) so that the baseline
sends the models the very seeds the pipeline does: every keyframe and clip of a take gets it."""
EDITED_PROMPTS = {
    "keyframe_prompt": "the keeper unrolls the message by lamplight, rain streaking the window",
    "end_keyframe_prompt": "the keeper folds the message into his coat and reaches for a pen",
}
"""The scene edit of the continue scenario: one scene rewritten, its first and last frames."""
FORK_PROMPTS = {
    "keyframe_prompt": "the keeper reads the message aloud on the gallery, gulls wheeling overhead",
    "end_keyframe_prompt": "the keeper rows out at dawn, the reply sealed in a bottle of his own",
}
"""The fork's scene edit: the same scene as the continue's, other words, so that neither finds
the other's media in the owner's artifact index."""
FULL_BUDGET_S = 420.0
"""Measurements stop being started past this (the stack and the warm-up come on top): the whole
run stays under 8 minutes even when neighbours slow the machine down."""
PACKAGES = ("google-cloud-firestore", "google-cloud-storage", "pillow", "numpy", "imageio-ffmpeg")


@dataclass(frozen=True)
class Profile:
    sizes: tuple[int, ...]
    repeats: int


FULL = Profile(sizes=(3, 10, 30), repeats=3)
QUICK = Profile(sizes=(3,), repeats=1)


# ---------------------------------------------------------------------------------------------
# Counting: Firestore, Storage, providers, CPU, per phase


@dataclass
class Tally:
    """What one phase (a stage of one project, the generate call, a baseline stage) did."""

    firestore: FirestoreOps = field(default_factory=FirestoreOps)
    storage_gets: int = 0
    storage_puts: int = 0
    storage_get_bytes: int = 0
    storage_put_bytes: int = 0
    storage_s: float = 0.0
    provider_s: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)
    """Model calls by kind: text (storyboard), image (keyframe), video (clip started),
    video_poll, stitch."""
    spans: list[tuple[str, float, float]] = field(default_factory=list)
    """(kind, start, end) of each model call: `--provider genai` takes their union."""


@dataclass
class Phase:
    name: str
    measures: dict[str, float]
    tally: Tally

    def row(self) -> dict[str, Any]:
        t, f = self.tally, self.tally.firestore
        firestore = ("reads", "writes", "lookups", "get_alls", "queries", "commits",
                     "write_bytes", "largest_write")  # fmt: skip
        storage = ("storage_gets", "storage_puts", "storage_get_bytes", "storage_put_bytes",
                   "storage_s", "provider_s")  # fmt: skip
        return {
            "name": self.name,
            **self.measures,
            **{k: getattr(f, k) for k in firestore},
            "firestore_calls": f.calls,
            "firestore_s": f.seconds,
            **{k: getattr(t, k) for k in storage},
            "calls": dict(t.calls),
            "rest_s": self.measures["wall_s"] - f.seconds - t.storage_s - t.provider_s,
            "rpcs": dict(f.rpcs),
            "paths": dict(sorted(f.paths.items())),
        }


class Meter:
    """Attributes every counted operation to the phase under way (one at a time: the pipeline
    runs its stages on this thread; providers' worker threads never touch Firestore), and
    measures each phase's CPU: this process (with ffmpeg) and the Firestore and Storage
    emulators, and the share of the machine everything else used meanwhile."""

    def __init__(self) -> None:
        self.current = Tally()
        self.emulators: dict[str, int] = {}
        """Process group of each emulator whose CPU counts as the pipeline's."""

    @contextlib.contextmanager
    def phase(self) -> Iterator[Tally]:
        previous = self.current
        with counting() as firestore:
            self.current = Tally(firestore)
            try:
                yield self.current
            finally:
                self.current = previous

    @contextlib.contextmanager
    def measured(self, name: str, into: list[Phase]) -> Iterator[Tally]:
        gc.collect()  # a collection left over from setup must not land in the phase measured
        with self.phase() as tally, CpuWindow(self.emulators) as cpu:
            yield tally
        use = cpu.use
        measures = {"wall_s": use.wall_s, "cpu_self_s": use.own_s,
                    "cpu_firestore_s": use.groups_s["firestore"],
                    "cpu_storage_s": use.groups_s["storage"], "others_share": use.others_share}  # fmt: skip
        into.append(Phase(name, measures, tally))


METER = Meter()


class CountingBlobs:
    """The runner's blob store, counted and timed; everything else passes through."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def get(self, bucket: str, name: str, **kwargs: Any) -> bytes | None:
        tally, started = METER.current, time.perf_counter()
        data: bytes | None = self._inner.get(bucket, name, **kwargs)
        tally.storage_s += time.perf_counter() - started
        tally.storage_gets += 1
        tally.storage_get_bytes += len(data or b"")
        return data

    def put(self, bucket: str, name: str, data: bytes, content_type: str) -> Any:
        tally, started = METER.current, time.perf_counter()
        stored = self._inner.put(bucket, name, data, content_type)
        tally.storage_s += time.perf_counter() - started
        tally.storage_puts += 1
        tally.storage_put_bytes += len(data)
        return stored

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Timed:
    """A provider whose calls are counted by kind and add their time to the phase under way:
    the model work."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = getattr(inner, "name", type(inner).__name__)

    @contextlib.contextmanager
    def _call(self, kind: str) -> Iterator[None]:
        tally, started = METER.current, time.perf_counter()
        tally.calls[kind] += 1
        try:
            yield
        finally:
            ended = time.perf_counter()
            tally.provider_s += ended - started
            tally.spans.append((kind, started, ended))

    async def aclose(self) -> None:
        """Closes the provider's client, where it has one (google-genai's, in the stage's loop)."""
        from shared.pipeline.concurrency import close_provider

        await close_provider(self._inner)

    async def storyboard(self, request: Any) -> Any:
        with self._call("text"):
            return await self._inner.storyboard(request)

    async def keyframe(self, request: Any) -> Any:
        with self._call("image"):
            return await self._inner.keyframe(request)

    async def start_clip(self, request: Any) -> Any:
        with self._call("video"):
            return await self._inner.start_clip(request)

    async def poll_clip(self, operation: Any) -> Any:
        with self._call("video_poll"):
            return await self._inner.poll_clip(operation)

    def stitch(self, *args: Any) -> Any:
        # Clips as bytes (answered), or clip files and a target file (the stitcher writes it).
        with self._call("stitch"):
            return self._inner.stitch(*args)


def local_providers() -> Any:
    """The local provider with 640×360 keyframes; everything else as `providers_for` builds it."""
    from shared.pipeline.local_provider import (
        LocalImageModel,
        LocalStitcher,
        LocalTextModel,
        LocalVideoModel,
    )
    from shared.pipeline.providers import Providers

    return Providers(
        Timed(LocalTextModel()),
        Timed(LocalImageModel(long_side=LONG_SIDE)),
        Timed(LocalVideoModel()),
        Timed(LocalStitcher()),
    )


# ---------------------------------------------------------------------------------------------
# One project through the pipeline, and the same media work without it


@dataclass
class Manifest:
    id: str
    assets: list[Any]
    """The assets as the snapshot will hold them (same order)."""
    images: dict[str, tuple[bytes, str]]
    """asset id → the stored image the pipeline reads for references, and its content type."""


def photo(seed: int, size: tuple[int, int]) -> bytes:
    """A synthetic photo: a gradient, a few shapes, noise; unlike any other seed's."""
    rng = random.Random(seed)
    width, height = size
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    tint = Image.new("RGB", size, tuple(rng.randrange(40, 220) for _ in range(3)))
    image = Image.blend(image, tint, 0.6)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(width // 10, width // 3)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x - r, y - r, x + r, y + r // 2), fill=colour)
    noise = Image.effect_noise(size, 24).convert("RGB")
    image = Image.blend(image, noise, 0.15)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88)
    return out.getvalue()


CAST = (
    ("CHARACTER", "Ada the keeper", (720, 960)),
    ("CHARACTER", "Ben the sailor", (720, 960)),
    ("PROP", "Green bottle", (800, 600)),
    ("ENVIRONMENT", "Lighthouse on the cliff", (1280, 853)),
)


def ready_manifest(services: Any, seed: int) -> Manifest:
    """Made through the registry and the upload path, then marked READY as processing would."""
    from shared.auth import Identity
    from shared.clients import firestore_client
    from shared.repositories.manifests import ManifestRepository

    photos = [(asset_type, name, photo(seed * 10 + number, size), "image/jpeg")
              for number, (asset_type, name, size) in enumerate(CAST)]  # fmt: skip
    manifest_id = uploaded_manifest(
        services.registry, services.uploads, Identity(OWNER), "Lighthouse cast", photos
    )
    firestore_client().collection("manifests").document(manifest_id).update({"status": "READY"})
    assets = ManifestRepository(firestore_client()).list_assets(manifest_id)
    bucket = services.settings.storage.media_bucket
    images: dict[str, tuple[bytes, str]] = {}
    for asset in assets:
        if asset.image is not None:
            data = services.blobs.get(bucket, asset.image.object_name, max_bytes=2**26)
            images[asset.id] = (data, asset.image.content_type)
    return Manifest(manifest_id, assets, images)


def generate_request(scenes: int, manifest_id: str) -> Any:
    from shared.models.projects import GenerateRequest

    return GenerateRequest(
        prompt=PROMPT,
        clip_seconds=CLIP_SECONDS,
        total_seconds=CLIP_SECONDS * scenes,
        manifest_id=manifest_id,
        take_seed=TAKE_SEED,
    )


def _queue_tasks(services: Any) -> QueuedTasks:
    tasks = QueuedTasks()
    services.pipeline._dispatcher = lambda: tasks
    return tasks


def run_pipeline(services: Any, scenes: int, manifest: Manifest) -> dict[str, Any]:
    from shared.auth import Identity
    from shared.models.projects import ProjectStatus
    from shared.pipeline.runner import StageOutcome

    tasks = _queue_tasks(services)
    phases: list[Phase] = []
    with METER.measured("generate", phases):
        project = services.projects.generate(Identity(OWNER), generate_request(scenes, manifest.id))
    outcomes = deliver(services, tasks, phases)
    # Outside any measured phase: reading back what was made, for the checks.
    stored = services.projects_repo.get(project.id)
    stored_scenes = services.projects_repo.scenes(project.id)
    checkpoints = services.projects_repo.checkpoints(project.id)
    problems = []
    if outcomes != [StageOutcome.DONE] * 4:
        problems.append(f"outcomes {[o.value for o in outcomes]}")
    if [p.name for p in phases[1:]] != list(STAGES):
        problems.append(f"stages ran {[p.name for p in phases[1:]]}")
    if stored is None or stored.status is not ProjectStatus.COMPLETE:
        problems.append(f"status {stored.status.value if stored else 'missing'}")
    if len(stored_scenes) != scenes:
        problems.append(f"{len(stored_scenes)} scenes stored")
    if len(checkpoints) != 4:
        problems.append(f"{len(checkpoints)} checkpoints")
    final_video = stored.final_video_object if stored else None
    media = {
        "keyframes": [
            _digest_of(s.start_frame_object) + "/" + _digest_of(s.end_frame_object)
            for s in stored_scenes
        ],
        "clips": [_digest_of(s.clip_object) for s in stored_scenes],
        "stitch": _digest_of(final_video),
    }
    return {
        "phases": phases,
        "problems": problems,
        "media": media,
        "project_id": project.id,
        "scenes": stored_scenes,
        "final_video": final_video,
        "checkpoint_bytes": max(
            (len(json.dumps(c.model_dump(mode="json"))) for c in checkpoints), default=0
        ),
    }


def deliver(services: Any, tasks: QueuedTasks, phases: list[Phase]) -> list[Any]:
    """Runs what was queued, and what that queues, in order: each stage a measured phase, its
    chunks one after another (the local models are bound by this machine's cores, which
    chunks on instances of their own would not share), the phase's outcome the first that is
    not done."""
    from shared.pipeline.runner import StageOutcome

    outcomes = []
    while tasks.queued:
        stage = tasks.queued[0].stage
        ran = []
        with METER.measured(stage.value, phases):
            while tasks.queued and tasks.queued[0].stage is stage:
                ran.append(services.pipeline.run(tasks.queued.pop(0)))
        outcomes.append(next((o for o in ran if o is not StageOutcome.DONE), StageOutcome.DONE))
    return outcomes


CONTINUED = ("continue", "keyframes", "clips", "stitch")
"""The continue as a user waits for it: the request and the stages it sets off (the edit and
the plan before it are measured apart)."""
FORKED = ("fork", "keyframes", "clips", "stitch")
"""The fork as a user waits for it: the fork request and the stages it sets off (the preview
before it is measured apart)."""
EXPECTED_CALLS = {"image": 2, "video": 1, "stitch": 1, "text": 0}
"""One scene's two keyframe prompts edited at the storyboard checkpoint: its start and end
keyframes, its clip and the stitch are made; everything else is reused from the artifact index."""
KINDS = ("text", "image", "video", "video_poll", "stitch")
MEDIA = ("start_frame_object", "end_frame_object", "clip_object")
BY_KIND = {"keyframes": "image", "clips": "video", "stitch": "stitch"}


def _changed(before: list[Any], after: list[Any], final_before: Any, final_after: Any) -> list[str]:
    changed = [
        f"scene {b.index} {field.removesuffix('_object')}"
        for b, a in zip(before, after, strict=False)
        for field in MEDIA
        if getattr(b, field) != getattr(a, field)
    ]
    return changed + (["final video"] if final_before != final_after else [])


def _plan_row(plan: Any) -> dict[str, Any]:
    return {
        "reuse": plan.reuse,
        "make": plan.make,
        "cost_usd": plan.cost_usd,
        "stages": [
            {"stage": p.stage.value, "reuse": p.reuse, "make": p.make, "cost_usd": p.cost_usd}
            for p in plan.stages
        ],
    }


def _scenario_checks(
    services: Any, what: str, full: dict[str, Any], project_id: str, phases: list[Phase],
    outcomes: list[Any], plan: Any,
) -> tuple[dict[str, Any], Any]:  # fmt: skip
    """What the fork and the continue must both do, checked on the project they finished: the
    model calls expected and planned, the three stages run, a complete project, and only the
    edited scene's media and the final video changed against the full run. Returns the
    scenario's result and the stored project."""
    from shared.models.projects import ProjectStatus
    from shared.pipeline.runner import StageOutcome

    with METER.phase():  # reading back, for the checks
        stored = services.projects_repo.get(project_id)
        after = services.projects_repo.scenes(project_id)
    calls: Counter[str] = Counter()
    for phase in phases:
        calls.update(phase.tally.calls)
    # As compared: the expected kinds first, then any other.
    kinds = (*EXPECTED_CALLS, *sorted(calls.keys() - EXPECTED_CALLS.keys()))
    seen = {k: calls.get(k, 0) for k in kinds}
    edited = len(full["scenes"]) // 2
    changed = _changed(
        full["scenes"], after, full["final_video"], stored.final_video_object if stored else None
    )
    problems = []
    if seen != EXPECTED_CALLS:
        problems.append(
            f"{what} made "
            + ", ".join(f"{v} {k}" for k, v in seen.items())
            + " calls; expected "
            + ", ".join(f"{v} {k}" for k, v in EXPECTED_CALLS.items())
        )
    made = {p.stage.value: p.make for p in plan.stages}
    if any(made.get(stage, 0) != calls.get(kind, 0) for stage, kind in BY_KIND.items()):
        problems.append(f"the plan makes {made}; the {what} called {dict(calls)}")
    ran = [p.name for p in phases if p.name in STAGES]
    if ran != ["keyframes", "clips", "stitch"] or outcomes != [StageOutcome.DONE] * 3:
        problems.append(f"{what} ran {ran}: {[o.value for o in outcomes]}")
    if stored is None or stored.status is not ProjectStatus.COMPLETE:
        problems.append(f"after the {what}: {stored.status.value if stored else 'missing'}")
    if len(after) != len(full["scenes"]) or any(
        not c.startswith(f"scene {edited} ") and c != "final video" for c in changed
    ):
        problems.append(f"{what}: {len(after)} scenes, media changed: {', '.join(changed)}")
    result = {"phases": phases, "problems": problems, "edited_scene": edited, "calls": seen,
              "changed": changed, "plan": _plan_row(plan)}  # fmt: skip
    return result, stored


def run_continue(services: Any, full: dict[str, Any]) -> dict[str, Any]:
    """The finished project of `full`: one scene's two keyframe prompts edited at the storyboard
    checkpoint, the plan read, then continued with auto_continue, as the routes do (PATCH
    …/scenes/{i}, GET …/plan, POST …/continue call these service methods)."""
    from shared.auth import Identity
    from shared.models.checkpoints import SceneEdit
    from shared.models.projects import Stage

    identity, project_id = Identity(OWNER), full["project_id"]
    tasks = _queue_tasks(services)
    with METER.phase():
        checkpoints = services.projects_repo.checkpoints(project_id)
    storyboard = next(c for c in checkpoints if c.stage is Stage.STORYBOARD)
    edit = SceneEdit(**EDITED_PROMPTS)
    phases: list[Phase] = []
    with METER.measured("edit", phases):
        services.checkpoints.edit_scene(
            identity, project_id, storyboard.id, len(full["scenes"]) // 2, edit
        )
    with METER.measured("plan", phases):
        planned = services.checkpoints.plan(identity, project_id, storyboard.id)
    with METER.measured("continue", phases):
        _, answered = services.checkpoints.continue_from(
            identity, project_id, storyboard.id, auto_continue=True
        )
    outcomes = deliver(services, tasks, phases)
    result, stored = _scenario_checks(
        services, "continue", full, project_id, phases, outcomes, planned
    )
    if stored is not None and stored.branch != "main-1":
        result["problems"].append(f"the continue ended on branch {stored.branch}, not main-1")
    if planned.model_dump() != answered.model_dump():
        result["problems"].append(
            "the plan read before the continue differs from the continue's answer"
        )
    return result


def run_fork(services: Any, full: dict[str, Any]) -> dict[str, Any]:
    """The finished project of `full`, forked with one scene's two keyframe prompts edited:
    the preview, then the fork, as the routes do (POST …/forks/preview and POST …/forks call
    these service methods); the fork's stage tasks delivered here. The source is only read."""
    from shared.auth import Identity
    from shared.models.checkpoints import SceneEdit
    from shared.models.forks import ForkRequest
    from shared.models.projects import ProjectStatus

    identity, source_id, repo = Identity(OWNER), full["project_id"], services.projects_repo
    tasks = _queue_tasks(services)
    request = ForkRequest(scene_edits={len(full["scenes"]) // 2: SceneEdit(**FORK_PROMPTS)})
    phases: list[Phase] = []
    with METER.measured("preview", phases):
        previewed = services.forks.preview(identity, source_id, request)
    with METER.measured("fork", phases):
        # (project, preview), and with uploads in the work tree (project, preview, slots).
        project, answered, *_ = services.forks.fork(identity, source_id, request)
    outcomes = deliver(services, tasks, phases)
    result, _ = _scenario_checks(
        services, "fork", full, project.id, phases, outcomes, previewed.plan
    )
    with METER.phase():  # reading back, for the checks
        source = repo.get(source_id)
        source_scenes = repo.scenes(source_id)
    if previewed.model_dump() != answered.model_dump():
        result["problems"].append("the fork's preview differs from the fork's answer")
    if (
        source is None
        or source.status is not ProjectStatus.COMPLETE
        or _changed(full["scenes"], source_scenes, full["final_video"], source.final_video_object)
    ):
        result["problems"].append("the fork changed its source")
    assets = previewed.assets.model_dump() if previewed.assets else None
    return {**result, "storyboard": previewed.storyboard, "assets": assets}


def _digest_of(object_name: str | None) -> str:
    """Stored media are named pipeline/<sha256>.<ext>: the name says the content."""
    return (object_name or "").rsplit("/", 1)[-1].split(".", 1)[0]


def run_baseline(scenes: int, manifest: Manifest) -> dict[str, Any]:
    """The same media work, the providers called directly, nothing stored anywhere."""
    from shared.pipeline.ports import (
        AssetBrief,
        ClipRequest,
        KeyframeRequest,
        ReferenceImage,
        StoryboardRequest,
    )
    from shared.pipeline.provenance import keyframe_prompt
    from shared.pipeline.storyboard import place_scene

    request = generate_request(scenes, manifest.id)
    seed = request.take_seed  # no re-rolls: every model call of the take gets the take's seed
    providers = local_providers()
    phases: list[Phase] = []
    assets = [a for a in manifest.assets if a.image is not None or a.reverse_prompt]
    aspect = request.aspect_ratio
    with METER.measured("storyboard", phases):
        draft, _ = asyncio.run(
            providers.text.storyboard(
                StoryboardRequest(
                    prompt=request.prompt,
                    style=request.style,
                    aspect_ratio=aspect,
                    scene_count=scenes,
                    clip_seconds=CLIP_SECONDS,
                    assets=[
                        AssetBrief(
                            tag=a.manifest_tag,
                            asset_type=a.asset_type.value,
                            name=a.name,
                            reverse_prompt=a.reverse_prompt,
                        )
                        for a in assets
                    ],
                )
            )
        )
        aliases = {note.tag: note.name for note in draft.characters if note.tag}
        placed = [place_scene(d, assets, aliases) for d in draft.scenes[:scenes]]
    by_id = {a.id: a for a in manifest.assets}
    by_tag = {a.manifest_tag: a for a in manifest.assets}
    frames: list[tuple[bytes, bytes]] = []
    made: dict[tuple[str, tuple[str, ...]], bytes] = {}
    """Identical requests (same prompt, seed, references) are made once, as the pipeline's
    artifact index does within a run: a long local storyboard repeats keyframe prompts."""

    def keyframe(words: str, scene: Any) -> bytes:
        prompt = keyframe_prompt(words, scene.asset_tags, by_tag)
        ids = tuple(i for i in scene.reference_asset_ids if i in manifest.images)
        if (prompt, ids) not in made:
            references = [ReferenceImage(by_id[i].manifest_tag, *manifest.images[i]) for i in ids]
            request = KeyframeRequest(prompt, aspect, references, seed=seed)
            made[prompt, ids] = asyncio.run(providers.image.keyframe(request)).data
        return made[prompt, ids]

    with METER.measured("keyframes", phases):
        for scene in placed:
            frames.append(
                (keyframe(scene.keyframe_prompt, scene), keyframe(scene.end_keyframe_prompt, scene))
            )
    clips: list[bytes] = []
    with METER.measured("clips", phases):
        for scene, (start_frame, end_frame) in zip(placed, frames, strict=True):
            operation = asyncio.run(
                providers.video.start_clip(
                    ClipRequest(
                        prompt=scene.motion_prompt,
                        start_frame=start_frame,
                        end_frame=end_frame,
                        seconds=CLIP_SECONDS,
                        aspect_ratio=aspect,
                        audio=request.audio,
                        seed=seed,
                    )
                )
            )
            if operation.video is None:
                raise RuntimeError(f"baseline clip failed: {operation.error}")
            clips.append(operation.video)
    with METER.measured("stitch", phases), tempfile.TemporaryDirectory() as folder:
        # Files in and out, as the stitcher takes them (the pipeline streams them to Storage).
        paths = [Path(folder) / f"{i:04d}.mp4" for i in range(len(clips))]
        for path, data in zip(paths, clips, strict=True):
            path.write_bytes(data)
        providers.stitcher.stitch(paths, Path(folder) / "video.mp4")
        final = (Path(folder) / "video.mp4").read_bytes()

    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    media = {
        "keyframes": [sha(a) + "/" + sha(b) for a, b in frames],
        "clips": [sha(c) for c in clips],
        "stitch": sha(final),
    }
    return {
        "phases": phases,
        "media": media,
        "frame_size": Image.open(io.BytesIO(frames[0][0])).size,
    }


# ---------------------------------------------------------------------------------------------
# The run


def build_services() -> Any:
    from functions.services import services

    services.cache_clear()  # built anew against this run's stack
    built = services()
    built.pipeline._blobs = CountingBlobs(built.pipeline._blobs)
    built.pipeline._providers = lambda project: local_providers()
    return built


def one_size(
    stack: Any, services: Any, scenes: int, repeat: int, baseline_first: bool, edit: bool = False
) -> dict[str, Any]:
    stack.reset()  # every project starts from empty emulators: the same collection sizes
    with METER.phase():  # setup is neither a stage nor the baseline
        manifest = ready_manifest(services, seed=repeat)
    results: dict[str, Any] = {}
    for which in ("baseline", "pipeline") if baseline_first else ("pipeline", "baseline"):
        if which == "pipeline":
            results["pipeline"] = run_pipeline(services, scenes, manifest)
        else:
            results["baseline"] = run_baseline(scenes, manifest)
    pipeline, baseline = results["pipeline"], results["baseline"]
    # Last: the project the pipeline finished, forked with one scene edited (which only reads
    # it), then that scene edited in the project itself and continued.
    forked = run_fork(services, pipeline) if edit else None
    continued = run_continue(services, pipeline) if edit else None
    scenarios = {"fork": forked, "continue": continued}
    problems = list(pipeline["problems"])
    for scenario in scenarios.values():
        problems += scenario["problems"] if scenario else []
    for kind in ("keyframes", "clips", "stitch"):
        if pipeline["media"][kind] != baseline["media"][kind]:
            problems.append(f"{kind}: baseline output differs from the pipeline's")
        ours = [dict(p.tally.calls) for p in pipeline["phases"] if p.name == kind]
        theirs = [dict(p.tally.calls) for p in baseline["phases"] if p.name == kind]
        if ours != theirs:
            problems.append(f"{kind}: model calls of the pipeline and the baseline differ")
    for phase in baseline["phases"]:
        if phase.tally.firestore.calls or phase.tally.firestore.rpcs:
            problems.append(f"baseline {phase.name} touched Firestore")
    labelled = [("", p) for p in pipeline["phases"]]
    for key, scenario in scenarios.items():
        labelled += [(f"{key}: ", p) for p in (scenario["phases"] if scenario else [])]
    for label, phase in labelled:
        mismatch = phase.tally.firestore.rpc_mismatch()
        if mismatch:
            problems.append(f"{label}{phase.name}: {mismatch}")
    return {
        "scenes": scenes,
        "repeat": repeat,
        "baseline_first": baseline_first,
        "pipeline": [p.row() for p in pipeline["phases"]],
        "baseline": [p.row() for p in baseline["phases"]],
        "checkpoint_json_bytes": pipeline["checkpoint_bytes"],
        "frame_size": baseline["frame_size"],
        **{
            key: None
            if scenario is None
            else {
                **{k: v for k, v in scenario.items() if k not in ("phases", "problems")},
                "phases": [p.row() for p in scenario["phases"]],
            }
            for key, scenario in scenarios.items()
        },
        "problems": problems,
    }


# ---------------------------------------------------------------------------------------------
# Aggregation and growth


MEASURES = (
    "wall_s", "reads", "writes", "firestore_calls", "firestore_s", "storage_gets", "storage_puts",
    "storage_s", "provider_s", "rest_s", "write_bytes", "largest_write", "cpu_self_s",
    "cpu_firestore_s", "cpu_storage_s", "others_share",
)  # fmt: skip


def aggregate(runs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per size and stage: medians across repeats (min and max of wall time), and the same for
    the baseline, the ratio of the medians and the median of the per-repeat ratios."""
    table: dict[int, dict[str, Any]] = {}
    for scenes in sorted({r["scenes"] for r in runs}):
        mine = [r for r in runs if r["scenes"] == scenes]
        entry: dict[str, Any] = {"repeats": len(mine), "stages": {}}
        for name in ("generate", *STAGES, "total"):
            pipe = [_phase(r["pipeline"], name) for r in mine]
            base = [_phase(r["baseline"], name) for r in mine] if name != "generate" else []
            row: dict[str, Any] = {m: statistics.median(p[m] for p in pipe) for m in MEASURES}
            walls = [p["wall_s"] for p in pipe]
            row.update(wall_min=min(walls), wall_max=max(walls))
            row["counts_vary"] = any(
                len({p[m] for p in pipe}) > 1 for m in ("reads", "writes", "firestore_calls")
            )
            if base:
                row["base_wall_s"] = statistics.median(b["wall_s"] for b in base)
                row["base_cpu_s"] = statistics.median(b["cpu_self_s"] for b in base)
                row["base_provider_s"] = statistics.median(b["provider_s"] for b in base)
                ratios = [p["wall_s"] / b["wall_s"] for p, b in zip(pipe, base, strict=True)]
                row["ratio"] = statistics.median(ratios)
                row.update(ratio_min=min(ratios), ratio_max=max(ratios))
                cpu = [
                    (p["cpu_self_s"] + p["cpu_firestore_s"] + p["cpu_storage_s"]) / b["cpu_self_s"]
                    for p, b in zip(pipe, base, strict=True)
                    if b["cpu_self_s"] > 0
                ]
                row["cpu_ratio"] = statistics.median(cpu) if cpu else math.nan
            entry["stages"][name] = row
        entry["checkpoint_json_bytes"] = statistics.median(r["checkpoint_json_bytes"] for r in mine)
        table[scenes] = entry
    return table


def _phase(
    phases: list[dict[str, Any]], name: str, within: tuple[str, ...] | None = None
) -> dict[str, Any]:
    if name != "total":
        return next(p for p in phases if p["name"] == name)
    # The run as a user waits for it: every stage, and generate where the pipeline has it
    # (or the phases named in `within`).
    if within is not None:
        phases = [p for p in phases if p["name"] in within]
    summed = {m: sum(p[m] for p in phases) for m in MEASURES if m != "largest_write"}
    summed["largest_write"] = max(p["largest_write"] for p in phases)
    wall = summed["wall_s"]
    summed["others_share"] = sum(p["others_share"] * p["wall_s"] for p in phases) / max(wall, 1e-9)
    return summed


CONTINUE_MEASURES = ("wall_s", "reads", "writes", "firestore_calls", "storage_gets", "storage_puts")


def aggregate_scenario(
    runs: list[dict[str, Any]], key: str, before: tuple[str, ...], within: tuple[str, ...]
) -> dict[str, Any] | None:
    """The continue or the fork scenario (`key`): medians across repeats per phase (`before`
    the request, then `within` its run), its total and its request alone against the full run
    that made the project (same repeat), as the median of per-repeat ratios."""
    mine = [r for r in runs if r.get(key)]
    if not mine:
        return None
    rows: dict[str, Any] = {}
    for name in (*before, *within, "total", "full"):
        picked = [
            _phase(r["pipeline"], "total")
            if name == "full"
            else _phase(r[key]["phases"], name, within)
            for r in mine
        ]
        row: dict[str, Any] = {
            m: statistics.median(p[m] for p in picked) for m in CONTINUE_MEASURES
        }
        row.update(wall_min=min(p["wall_s"] for p in picked),
                   wall_max=max(p["wall_s"] for p in picked))  # fmt: skip
        if name == "full":
            phases = [p for r in mine for p in r["pipeline"]]
        elif name == "total":
            phases = [p for r in mine for p in r[key]["phases"] if p["name"] in within]
        else:
            phases = [p for r in mine for p in r[key]["phases"] if p["name"] == name]
        calls: Counter[str] = Counter()
        for phase in phases:
            calls.update(phase["calls"])
        row["calls"] = {k: calls[k] / len(mine) for k in KINDS if k in calls}  # per repeat
        rows[name] = row

    def ratios(name: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for measure in CONTINUE_MEASURES:
            values = [
                _phase(r[key]["phases"], name, within)[measure]
                / _phase(r["pipeline"], "total")[measure]
                for r in mine
                if _phase(r["pipeline"], "total")[measure]
            ]
            if values:
                found[measure] = spread(values)
        return found

    last = mine[-1][key]
    spent: dict[str, Counter[str]] = {"read": Counter(), "write": Counter()}
    for phase in last["phases"]:
        if phase["name"] in within:
            for path, count in phase["paths"].items():
                verb, where = path.split(" ", 1)
                spent[verb][where] += count
    return {
        "scenario": key,
        "scenes": mine[0]["scenes"],
        "repeats": len(mine),
        "edited_scene": last["edited_scene"],
        "rows": rows,
        "ratios": ratios("total"),
        "request_ratios": ratios(within[0]),
        "calls": [r[key]["calls"] for r in mine],
        "plans": [r[key]["plan"] for r in mine],
        "changed": last["changed"],
        "expected_calls": EXPECTED_CALLS,
        "where": {verb: dict(c.most_common()) for verb, c in spent.items()},
        **{k: last[k] for k in ("storyboard", "assets") if k in last},
    }


def fit(points: list[tuple[int, float]]) -> dict[str, float]:
    """Least squares value = fixed + per_scene × N, its R², and the exponent k of value ∝ N^k
    between the smallest and the largest N (1: proportional; 0: flat)."""
    xs, ys = [float(x) for x, _ in points], [y for _, y in points]
    if len(points) < 2:
        return {"fixed": math.nan, "per_scene": math.nan, "r2": math.nan, "exponent": math.nan}
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    fixed = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - fixed - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else 1.0
    (x0, y0), (x1, y1) = points[0], points[-1]
    exponent = math.log(y1 / y0) / math.log(x1 / x0) if y0 > 0 and y1 > 0 else math.nan
    return {
        "fixed": fixed,
        "per_scene": slope,
        "r2": r2,
        "exponent": exponent,
        "span": x1 - x0,
        "mean": my,
    }


GROWTH = (
    ("wall_s", "wall time", "time"),
    ("base_wall_s", "baseline wall time", "time"),
    ("reads", "Firestore reads", "count"),
    ("writes", "Firestore writes", "count"),
    ("write_bytes", "bytes written to Firestore", "bytes"),
    ("storage_gets", "Storage gets", "count"),
)
OVERHEAD = ("firestore_s", "storage_s", "rest_s", "provider_s", "base_provider_s")
"""Fitted too, for the observations: where the per-scene overhead goes."""


def growth(table: dict[int, dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    sizes = sorted(table)
    result: dict[str, dict[str, dict[str, float]]] = {}
    for name in ("generate", *STAGES, "total"):
        for measure in (*(m for m, _, _ in GROWTH), *OVERHEAD):
            points = [
                (n, table[n]["stages"][name][measure])
                for n in sizes
                if measure in table[n]["stages"][name]
            ]
            if points:
                result.setdefault(name, {})[measure] = fit(points)
    return result


# ---------------------------------------------------------------------------------------------
# Output


def _seconds(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 0.1:
        return f"{magnitude:.2f} s"
    return f"{magnitude * 1000:.0f} ms" if magnitude >= 0.01 else f"{magnitude * 1000:.1f} ms"


def _formula(f: dict[str, float], kind: str) -> str:
    """fixed + per_scene·N in the measure's unit; 'flat' where the line moves by less than a
    tenth of the mean (a quarter for times: tens of milliseconds are mostly noise here)."""
    if math.isnan(f["per_scene"]):
        return "–"
    fixed, slope = f["fixed"], f["per_scene"]
    if kind == "time":
        per_scene_ms = abs(slope) * 1000  # per scene, always in ms: comparable across stages
        fixed_text = _seconds(fixed)
        slope_text = f"{per_scene_ms:.0f} ms" if per_scene_ms >= 10 else f"{per_scene_ms:.1f} ms"
    elif kind == "bytes":
        fixed_text, slope_text = f"{abs(fixed) / 1024:.1f} KiB", f"{abs(slope) / 1024:.2f} KiB"
    else:
        fixed_text, slope_text = f"{abs(fixed):.1f}", f"{abs(slope):.1f}"
    tolerance = 0.25 if kind == "time" else 0.1
    if abs(slope) * f.get("span", 27) < tolerance * max(abs(f.get("mean", fixed)), 1e-9):
        return f"{fixed_text}, flat" if fixed >= 0 else f"−{fixed_text}, flat"
    sign = "+" if slope >= 0 else "−"
    # Integer counts that fit exactly are written as the exact rule.
    if (
        kind == "count"
        and f["r2"] > 0.99999
        and abs(fixed - round(fixed)) < 1e-6
        and abs(slope - round(slope)) < 1e-6
    ):
        fixed_text, slope_text = str(abs(round(fixed))), str(abs(round(slope)))
        return f"{'−' if fixed < 0 else ''}{fixed_text} {sign} {slope_text}·N exactly"
    return f"{'−' if fixed < 0 else ''}{fixed_text} {sign} {slope_text}·N"


def _range(row: dict[str, Any]) -> str:
    return f"{row['wall_s']:.2f} ({row['wall_min']:.2f}–{row['wall_max']:.2f})"


def table_lines(table: dict[int, dict[str, Any]]) -> list[str]:
    head = (
        "| N | stage | pipeline s (min–max) | baseline s | pipeline ÷ baseline (min–max) | "
        "reads | writes | Firestore calls | Firestore s | Storage gets / puts | Storage s | "
        "models s | rest s | CPU ÷ baseline CPU | others' CPU |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for n, entry in table.items():
        for name in ("generate", *STAGES, "total"):
            r = entry["stages"][name]
            base = f"{r['base_wall_s']:.2f}" if "base_wall_s" in r else "–"
            ratio = (
                f"{r['ratio']:.2f}× ({r['ratio_min']:.2f}–{r['ratio_max']:.2f})"
                if "ratio" in r
                else "–"
            )
            cpu = (
                f"{r['cpu_ratio']:.2f}×"
                if "cpu_ratio" in r and not math.isnan(r["cpu_ratio"])
                else "–"
            )
            label = f"**{name}**" if name == "total" else name
            lines.append(
                f"| {n} | {label} | {_range(r)} | {base} | {ratio} | {r['reads']:.0f} | "
                f"{r['writes']:.0f} | {r['firestore_calls']:.0f} | {r['firestore_s']:.3f} | "
                f"{r['storage_gets']:.0f} / {r['storage_puts']:.0f} | {r['storage_s']:.3f} | "
                f"{r['provider_s']:.2f} | {r['rest_s']:.3f} | {cpu} | {r['others_share'] * 100:.0f}% |"
            )
    return lines


def _calls(calls: dict[str, float]) -> str:
    shown = [f"{kind} {n:g}" for kind, n in calls.items() if n]
    return ", ".join(shown) or "none"


def continue_lines(cont: dict[str, Any]) -> list[str]:
    """The continue's or the fork's table: its phases, its total, the full run, the ratios."""
    what = cont["scenario"]
    head = (
        "| phase | wall s (min–max) | reads | writes | Firestore calls | Storage gets / puts | "
        "model calls |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    labels = {"total": f"**{what} total**", "full": "**full run** (generate + 4 stages)"}
    for name, r in cont["rows"].items():
        lines.append(
            f"| {labels.get(name, name)} | {_range(r)} | {r['reads']:.0f} | {r['writes']:.0f} | "
            f"{r['firestore_calls']:.0f} | {r['storage_gets']:.0f} / {r['storage_puts']:.0f} | "
            f"{_calls(r['calls'])} |"
        )
    for label, q in ((f"{what} total", cont["ratios"]), (f"{what} request",
                                                         cont["request_ratios"])):  # fmt: skip

        def ratio(m: str, q: dict[str, Any] = q) -> str:
            if m not in q:
                return "–"
            return f"{q[m]['median']:.3f} ({q[m]['min']:.3f}–{q[m]['max']:.3f})"

        lines.append(
            f"| **{label} ÷ full run** | {ratio('wall_s')} | {ratio('reads')} | "
            f"{ratio('writes')} | {ratio('firestore_calls')} | {ratio('storage_gets')} / "
            f"{ratio('storage_puts')} | – |"
        )
    return lines


def continue_summary(cont: dict[str, Any]) -> list[str]:
    what = cont["scenario"]
    plan = cont["plans"][-1]
    seen = cont["calls"]
    wanted = cont["expected_calls"]
    same = all(c == wanted for c in seen)
    stages = ", ".join(
        f"{s['stage']} reuse {s['reuse']} / make {s['make']}" for s in plan["stages"]
    )
    source = (
        "Preview (POST …/forks/preview, and the fork's answer)"
        if what == "fork"
        else "Plan (GET …/plan before the continue, and the continue's answer)"
    )
    assets = cont.get("assets")
    extra = (
        f"; storyboard {cont['storyboard']}"
        + (
            ""
            if assets is None
            else "; the fork's manifest: "
            + ", ".join(f"{v} {k}" for k, v in assets.items())
            + " assets"
        )
        if what == "fork"
        else ""
    )
    return [
        f"Model calls of the {what}, per repeat: "
        + "; ".join(", ".join(f"{v} {k}" for k, v in c.items()) for c in seen)
        + f". Expected {', '.join(f'{v} {k}' for k, v in wanted.items())}: "
        + ("**as expected**." if same else "**not as expected** (listed under Checks)."),
        f"{source}: reuse {plan['reuse']}, "
        f"make {plan['make']} ({stages}), ${plan['cost_usd']:.4f} at list prices{extra}"
        + (
            ""
            if len({json.dumps(p, sort_keys=True) for p in cont["plans"]}) == 1
            else "; plans differed between repeats"
        )
        + ".",
        f"Media that changed against the full run: {', '.join(cont['changed']) or 'none'}.",
        f"Where the {what} total's reads and writes go (one repeat): reads "
        + ", ".join(f"{k} {v}" for k, v in cont["where"]["read"].items())
        + "; writes "
        + ", ".join(f"{k} {v}" for k, v in cont["where"]["write"].items())
        + ".",
    ]


def growth_lines(grown: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    head = "| stage | " + " | ".join(label for _, label, _ in GROWTH) + " |"
    lines = [head, "|" + "---|" * (len(GROWTH) + 1)]
    for name, measures in grown.items():
        cells = []
        for measure, _, pattern in GROWTH:
            f = measures.get(measure)
            if f is None:
                cells.append("–")
                continue
            text = _formula(f, pattern)
            if not math.isnan(f["exponent"]) and "exact" not in text and "flat" not in text:
                text += f" (R² {f['r2']:.3f})"
            if not math.isnan(f["exponent"]):
                text += f"; k {f['exponent'] + 0.0:.2f}".replace("-0.00", "0.00")
            cells.append(text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def paths_lines(runs: list[dict[str, Any]], scenes: int) -> list[str]:
    run = next(r for r in runs if r["scenes"] == scenes)
    lines = ["| stage | reads by collection | writes by collection |", "|---|---|---|"]
    for phase in run["pipeline"]:
        reads = [f"{k[5:]} {v}" for k, v in phase["paths"].items() if k.startswith("read ")]
        writes = [f"{k[6:]} {v}" for k, v in phase["paths"].items() if k.startswith("write ")]
        lines.append(
            f"| {phase['name']} | {', '.join(reads) or '–'} | {', '.join(writes) or '–'} |"
        )
    return lines


def observations(
    table: dict[int, dict[str, Any]], grown: dict[str, Any], runs: list[dict[str, Any]]
) -> list[str]:
    sizes = sorted(table)
    small, large = sizes[0], sizes[-1]
    lines = []
    for name in ("generate", *STAGES, "total"):
        g = grown[name]
        ts, tl = table[small]["stages"][name], table[large]["stages"][name]
        text = (
            f"**{name}**: {ts['wall_s']:.2f} s → {tl['wall_s']:.2f} s from {small} to {large} "
            f"scenes (×{tl['wall_s'] / ts['wall_s']:.1f} for ×{large / small:.0f} scenes: "
            f"{_formula(g['wall_s'], 'time')}); reads {_formula(g['reads'], 'count')}, writes "
            f"{_formula(g['writes'], 'count')}"
        )
        if "ratio" in tl:
            text += (
                f"; pipeline ÷ baseline {ts['ratio']:.2f}× at {small} scenes, {tl['ratio']:.2f}× "
                f"at {large}"
            )
        lines.append(text + ".")
    total = grown["total"]
    extra = total["wall_s"]["per_scene"] - total["base_wall_s"]["per_scene"]
    lines.append(
        f"**Overhead per scene**: the pipeline takes {total['wall_s']['per_scene'] * 1000:.0f} ms "
        f"per added scene where the media work alone takes "
        f"{total['base_wall_s']['per_scene'] * 1000:.0f} ms: {extra * 1000:.0f} ms more, of which "
        f"Storage calls {total['storage_s']['per_scene'] * 1000:.0f} ms, Firestore calls "
        f"{total['firestore_s']['per_scene'] * 1000:.0f} ms and the rest of the orchestration "
        f"{total['rest_s']['per_scene'] * 1000:.0f} ms (the models inside the pipeline: "
        f"{total['provider_s']['per_scene'] * 1000:.0f} ms against "
        f"{total['base_provider_s']['per_scene'] * 1000:.0f} ms in the baseline, measured apart "
        "on a shared machine)."
        + (
            " The overhead grows in step with the media work: the ratio stays within 15% from "
            f"{small} to {large} scenes."
            if abs(
                table[large]["stages"]["total"]["ratio"] / table[small]["stages"]["total"]["ratio"]
                - 1
            )
            < 0.15
            else ""
        )
    )
    run = next(r for r in runs if r["scenes"] == large)

    def read_count(prefix: str, *, exact: bool = False) -> int:
        return sum(
            count
            for p in run["pipeline"]
            for key, count in p["paths"].items()
            if (key == "read " + prefix if exact else key.startswith("read " + prefix))
        )

    reads = read_count("")
    scenes = read_count("projects/*/scenes")
    spend = read_count("projects/*/spend")
    index = read_count("owners/*/artifacts")
    snapshot = read_count("manifest_snapshots")
    project = read_count("projects/*", exact=True)

    def share(count: int) -> str:
        return f"{count} ({count / reads:.0%})"

    lines.append(
        f"**What the reads are** (N = {large}, {reads} in all): the scenes read back "
        f"{share(scenes)} (each stage lists them when it starts and again for its checkpoint); "
        f"the project's spend lines {share(spend)} (each stage's end reads only its own "
        "stage's lines, a query on `stage`, to sum its ledger line: one per artifact the "
        f"project made in that stage); the artifact index {share(index)} (one lookup per "
        f"artifact a stage may make, found or not); the project document {share(project)} "
        "(each guarded change reads it, and a stage again before each scene it makes and "
        "writes, and once before the one batch in which it writes all the scenes the index "
        "has whole, to check that its run is current: in a full run the index has none of a "
        "stage's scenes when it starts, so once per scene); "
        f"the manifest snapshot {share(snapshot)} (once per stage that uses it)."
    )
    made = {r["scenes"]: _phase(r["pipeline"], "keyframes")["calls"].get("image", 0) for r in runs}
    lines.append(
        "**Keyframes made**: "
        + ", ".join(f"{made[n]} of {2 * n} at {n} scenes" for n in sorted(made))
        + ". A take gives every keyframe one seed and the local storyboard repeats prompts in "
        "long stories, so a repeated keyframe is found in the artifact index and reused within "
        "the run; the baseline makes each once too."
    )
    inexact = [
        f"{name} {measure}"
        for name, measures in grown.items()
        for measure in ("reads", "writes")
        if "exactly" not in _formula(measures[measure], "count")
        and "flat" not in _formula(measures[measure], "count")
    ]
    lines.append(
        "Every Firestore count is a fixed part plus a whole number per scene: nothing grows "
        "faster than the scene count."
        if not inexact
        else "Not exactly linear in N: " + ", ".join(inexact) + "."
    )
    return lines


def growth_section(report: dict[str, Any], sizes: list[int]) -> list[str]:
    if len(sizes) < 2:
        return ["One size only (quick mode): how the measures grow needs the full run.", ""]
    table = {int(k): v for k, v in report["table"].items()}
    return [
        "## How each measure grows with the scene count N",
        "",
        "Least-squares line through the medians at "
        + ", ".join(str(n) for n in sizes)
        + " scenes (integer counts that fit exactly are given as the exact rule), and k, the "
        f"exponent of value ∝ N^k between {sizes[0]} and {sizes[-1]} scenes (1: proportional, "
        "0: flat, above 1: faster than the scene count).",
        "",
        *growth_lines(report["growth"]),
        "",
        *[f"- {line}" for line in observations(table, report["growth"], report["runs"])],
        "",
    ]


def scenario_section(cont: dict[str, Any] | None) -> list[str]:
    """The fork's or the continue's section of the report: what was done, its table, notes."""
    if cont is None:
        return []
    n, edited, repeats = cont["scenes"], cont["edited_scene"], cont["repeats"]
    if cont["scenario"] == "fork":
        title = f"## Fork with one scene edit (N = {n})"
        what = (
            f"Each repeat's {n}-scene project, once finished (before the continue below), is "
            f"forked with scene {edited}'s `keyframe_prompt` and `end_keyframe_prompt` "
            "edited (`ForkRequest(scene_edits=…)`, other words than the continue's): the preview "
            "(`ForkService.preview`, what `POST …/forks/preview` calls), then the fork "
            "(`ForkService.fork`, what `POST …/forks` calls: the fork's manifest, its snapshot, "
            "its storyboard checkpoint and scenes, its project document, its first task); the "
            "stage tasks it queues are delivered in this process. **fork** is that call alone; "
            "**fork total** is the fork call and its stages, against the **full run** that made "
            f"the source, in the same repeat: medians of {repeats} repeat(s), and the "
            "median (min–max) of the per-repeat ratios. Model calls are counted against the "
            "preview's plan."
        )
    else:
        title = f"## Continue after one scene edit (N = {n})"
        what = (
            f"Each repeat's {n}-scene project, once finished, has scene {edited}'s "
            "`keyframe_prompt` and `end_keyframe_prompt` edited at its storyboard checkpoint "
            "(`CheckpointService.edit_scene`, what `PATCH …/checkpoints/{cid}/scenes/{i}` "
            "calls), the plan read (`GET …/checkpoints/{cid}/plan`), and is continued with "
            "`auto_continue` (`continue_from`, what `POST …/checkpoints/{cid}/continue` calls); "
            "the stage tasks it queues are delivered in this process. **continue total** is the "
            "request and those stages, against the **full run** that made the project, in the "
            f"same repeat: medians of {repeats} repeat(s), and the median (min–max) of the "
            "per-repeat ratios. Model calls are counted by wrapping the providers (per repeat). "
            "The fork above ran first, on the same project; it only reads its source."
        )
    return [title, "", what, "", *continue_lines(cont), "",
            *[f"- {line}" for line in continue_summary(cont)], ""]  # fmt: skip


def write_reports(report: dict[str, Any], out: Path) -> None:
    table = {int(k): v for k, v in report["table"].items()}
    m = report["machine"]
    sizes = sorted(table)
    largest = sizes[-1]
    repeats = ", ".join(f"{n} scenes: {table[n]['repeats']}" for n in sizes)
    frame = report["runs"][0]["frame_size"] if report["runs"] else ("?", "?")
    problems = [
        f"N={r['scenes']} repeat {r['repeat']}: {p}" for r in report["runs"] for p in r["problems"]
    ]
    varied = [
        f"{n} {name}" for n in sizes for name, r in table[n]["stages"].items() if r["counts_vary"]
    ]
    md = [
        "# Pipeline: wall time and Firestore reads and writes per stage",
        "",
        f"`benchmarks/pipeline.py`, {report['mode']} mode, {m['date_utc']} UTC, commit "
        f"{m['commit']}{' (tracked files changed)' if m['working_tree_changed'] else ''}; "
        f"whole run {report['run_s']:.0f} s.",
        "",
        f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, {m['os']}, Python "
        f"{m['python']}, Node {m['node']}; {m['ffmpeg']}; "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items())
        + f". Load average {m['loadavg_start'][0]:.1f} at the start and "
        f"{report['loadavg_end'][0]:.1f} at the end: the machine is shared, so read the min–max, "
        "the CPU ratio and the others' CPU column.",
        "",
        f"Projects: prompt of {len(PROMPT)} characters, clip_seconds {CLIP_SECONDS}, total_seconds "
        f"2 × N, 16:9, take seed {TAKE_SEED}, the local provider (storyboard, keyframes at {frame[0]}×{frame[1]} "
        f"(`LocalImageModel(long_side={LONG_SIDE})`), 24 fps H.264 clips, stream-copy stitch), a "
        "READY manifest of four assets with synthetic JPEG photos (two characters, a prop, a "
        "place). Stages delivered in this process as the run_stage function would run them, "
        "against the Firestore and Storage emulators on loopback. Repeats: "
        f"{repeats}; medians. Each project starts from emptied emulators.",
        "",
        "## Per stage",
        "",
        *table_lines(table),
        "",
        "![Wall time of the whole run (generate and four stages) against the scene count, "
        "the pipeline and its baseline](pipeline_time.png)",
        "",
        "- **pipeline s**: `PipelineRunner.run(task)` for that stage's task; **generate** is "
        "`ProjectService.generate` (manifest snapshot, project document, first task).",
        "- **baseline s**: the same media work without the pipeline, measured beside it: the "
        "local providers called directly with the same prompts, seeds and reference images (in "
        "memory), nothing stored; a keyframe asked for twice in one project (a long local "
        "storyboard repeats prompts; a take has one seed) is made once, as the pipeline's "
        "artifact index has it. Its keyframes, clips and final video are checked "
        "byte-identical to what the pipeline stored. **pipeline ÷ baseline** is the median of "
        "the per-repeat ratios: the overhead of Firestore, Storage and orchestration.",
        "- **reads / writes**: Firestore documents as billed (a query returning nothing counts "
        "one read; a lookup counts one whether found or not); exact and identical in every "
        "repeat. **Firestore calls**: round trips (lookups, queries, batch gets, commits).",
        "- **Firestore s / Storage s / models s**: time inside those calls (models: the local "
        "providers); **rest**: everything else in the stage (pydantic validation and copies, "
        "change detection, hashing media for their names, an event loop per provider call).",
        "- **CPU ÷ baseline CPU**: CPU seconds of this process (ffmpeg included) plus the "
        "Firestore and Storage emulators, over the baseline's: steadier than wall time when "
        "others load the machine. **others' CPU**: share of both cores used by other "
        "processes meanwhile.",
        "",
        *growth_section(report, sizes),
        *scenario_section(report.get("fork")),
        *scenario_section(report.get("continue")),
        f"## Where the reads and writes go (N = {largest}, one repeat)",
        "",
        *paths_lines(report["runs"], largest),
        "",
        "Largest single document written per stage (serialized), and the largest checkpoint as "
        "JSON: "
        + "; ".join(
            f"{n} scenes: "
            + ", ".join(
                f"{s} {table[n]['stages'][s]['largest_write'] / 1024:.1f} KiB" for s in STAGES
            )
            + f", checkpoint {table[n]['checkpoint_json_bytes'] / 1024:.1f} KiB"
            for n in sizes
        )
        + ". Firestore refuses documents over 1 MiB.",
        "",
        "## Checks",
        "",
        (
            "Every project completed with 4 checkpoints and N scenes; the baseline's media were "
            "byte-identical to the pipeline's, from as many model calls; the baseline touched no "
            "Firestore; the client's RPCs matched the counted calls in every phase."
            + (
                " Every fork made exactly the expected model calls, as its preview said (the "
                "fork answered the same preview), changed only the edited scene's media and the "
                "final video against its source, completed, and left its source as it was."
                if report.get("fork")
                else ""
            )
            + (
                " Every continue made exactly the expected model calls, as its plan said, "
                "changed only the edited scene's media and the final video, and completed on "
                "branch main-1."
                if report.get("continue")
                else ""
            )
            if not problems
            else "Problems:\n\n" + "\n".join(f"- {p}" for p in problems)
        ),
        ("" if not varied else "\nCounts differed between repeats in: " + ", ".join(varied) + "."),
        "",
        "Per-run figures (every phase, every repeat, reads and writes by collection) are in "
        "`pipeline.json`.",
        "",
    ]
    write_atomically(out / "pipeline.md", "\n".join(md))
    write_json(out / "pipeline.json", report)
    totals = {n: table[n]["stages"]["total"] for n in sizes}
    chart = line_chart(
        "Whole run: wall time against the scene count (medians)", "scenes", "wall s",
        {"pipeline (generate + 4 stages)": [(n, t["wall_s"]) for n, t in totals.items()],
         "baseline (the same media work)": [(n, t["base_wall_s"]) for n, t in totals.items()]},
    )  # fmt: skip
    write_atomically(out / "pipeline_time.png", chart)


def main(argv: list[str] | None = None) -> int:
    def provider(parser: Any) -> None:
        parser.add_argument("--provider", choices=("local", "genai"), default="local",
                            help="local models, or google-genai against the Gemini stand-in")  # fmt: skip

    args = arguments(__doc__, "3 scenes once: a smoke run", argv, provider)
    if args.provider == "genai":
        return genai_main(args)
    profile = QUICK if args.quick else FULL
    began = time.perf_counter()
    from shared.pipeline.local_ffmpeg import ffmpeg_exe

    ffmpeg = command_output(ffmpeg_exe(), "-hide_banner", "-version").split(" Copyright", 1)[0]
    info = machine(PACKAGES, ffmpeg=ffmpeg)
    runs: list[dict[str, Any]] = []
    with own_stack(STATE_DIR) as stack, installed():
        use_in_this_process(stack)
        services = build_services()
        METER.emulators = {n: stack.processes[n].pid for n in ("firestore", "storage")}
        print(f"pipeline benchmark: {'quick' if args.quick else 'full'} run, stack up in "
              f"{time.perf_counter() - began:.1f} s", flush=True)  # fmt: skip
        # Imports, fonts, the ffmpeg binary, gRPC channels: paid once, before any figure.
        one_size(stack, services, 3, repeat=99, baseline_first=False, edit=True)
        print(f"  warm-up done at {time.perf_counter() - began:.0f} s", flush=True)
        measuring_since = time.perf_counter()
        last_s: dict[int, float] = {}
        for repeat in range(profile.repeats):
            for scenes in profile.sizes:
                elapsed = time.perf_counter() - measuring_since
                # Estimated from this size's last run, or the previous size scaled by scenes.
                estimate = last_s.get(scenes) or (
                    max(last_s.values()) * scenes / max(last_s) if last_s else 0.0
                )
                if not args.quick and repeat > 0 and elapsed + estimate > FULL_BUDGET_S:
                    print(
                        f"  skipping {scenes} scenes, repeat {repeat + 1}: time budget", flush=True
                    )
                    continue
                t0 = time.perf_counter()
                run = one_size(
                    stack,
                    services,
                    scenes,
                    repeat,
                    baseline_first=repeat % 2 == 1,
                    edit=scenes == max(profile.sizes),
                )
                last_s[scenes] = time.perf_counter() - t0
                runs.append(run)
                print_run(run)
    table = aggregate(runs)
    report: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "machine": info,
        "settings": {
            "sizes": profile.sizes,
            "repeats": profile.repeats,
            "clip_seconds": CLIP_SECONDS,
            "long_side": LONG_SIDE,
            "prompt": PROMPT,
            "manifest": [{"type": t, "name": n, "photo": list(s)} for t, n, s in CAST],
        },
        "run_s": time.perf_counter() - began,
        "loadavg_end": os.getloadavg(),
        "table": table,
        "growth": growth(table),
        "fork": aggregate_scenario(runs, "fork", ("preview",), FORKED),
        "continue": aggregate_scenario(runs, "continue", ("edit", "plan"), CONTINUED),
        "runs": runs,
    }
    print()
    print("\n".join(table_lines(table)))
    if len(table) > 1:
        print()
        print("\n".join(growth_lines(report["growth"])))
    for key, title in (
        ("fork", "fork with one scene edit"),
        ("continue", "continue after one scene edit"),
    ):
        if report[key]:
            print(f"\n{title}, {report[key]['scenes']} scenes:")
            print("\n".join(continue_lines(report[key])))
            print("\n".join(continue_summary(report[key])))
    write_reports(report, args.out)
    print(
        f"\nwhole run {report['run_s']:.0f} s; reports in {args.out}/pipeline.md, pipeline.json "
        "and pipeline_time.png"
    )
    failed = [p for r in runs for p in r["problems"]]
    return 1 if failed else 0


def print_run(run: dict[str, Any]) -> None:
    """One line per project measured, and one per scenario on it, as the run goes."""
    total = _phase(run["pipeline"], "total")
    base = _phase(run["baseline"], "total")
    problems = "; PROBLEMS: " + "; ".join(run["problems"]) if run["problems"] else ""
    print(
        f"  {run['scenes']:>2} scenes, repeat {run['repeat'] + 1}: pipeline "
        f"{total['wall_s']:.2f} s, baseline {base['wall_s']:.2f} s, reads {total['reads']}, "
        f"writes {total['writes']}{problems}",
        flush=True,
    )
    if run["fork"]:
        fork = _phase(run["fork"]["phases"], "total", FORKED)
        print(
            f"      fork editing scene {run['fork']['edited_scene']}: preview "
            f"{_phase(run['fork']['phases'], 'preview')['wall_s']:.2f} s, fork and "
            f"its stages {fork['wall_s']:.2f} s, reads {fork['reads']}, writes "
            f"{fork['writes']}, calls {_calls(run['fork']['calls'])}",
            flush=True,
        )
    if run["continue"]:
        cont = _phase(run["continue"]["phases"], "total", CONTINUED)
        print(
            f"      continue after editing scene {run['continue']['edited_scene']}: "
            f"{cont['wall_s']:.2f} s, reads {cont['reads']}, writes "
            f"{cont['writes']}, calls {_calls(run['continue']['calls'])}",
            flush=True,
        )


# ---------------------------------------------------------------------------------------------
# --provider genai: the real google-genai providers against the Gemini stand-in, at a remote
# model's latency


GENAI_SIZES = {"full": (3, 10, 30), "quick": (3,)}
GENAI_SCALE = {"full": 1.0, "quick": 0.1}
"""Latencies and the poll delay waited are multiplied by this: --quick runs at a tenth."""
IMAGE_S = 2.0
"""Latency of one image call: the stand-in holds each generateContent this long."""
POLLS_BEFORE_DONE = 1
"""The stand-in answers "not done" to each operation's first poll: with the runner's poll delay
(10 s) between passes, a clip is done at the second poll, 20 s after the clips stage began."""
GENAI_MODELS = {"image_model": "gemini-2.5-flash-image", "video_model": "veo-3.0-fast-generate-001"}
GENAI_CLIP_SECONDS = 4  # Veo makes 4, 6 or 8 s clips


def genai_outcomes(chunks: int) -> Counter[str]:
    """Storyboard; each chunk's keyframes, clips started, poll 1 (none done), poll 2 (all
    done); the stitch."""
    return Counter({"storyboard done": 1, "keyframes done": chunks, "clips waiting": chunks,
                    "clips poll 1 waiting": chunks, "clips poll 2 done": chunks,
                    "stitch done": 1})  # fmt: skip


class DelayedTasks:
    """Stands in for Cloud Tasks: a task is delivered once its delay (× `scale`) has passed
    since it was enqueued, those due together at once, each on a thread of its own, as the
    queue dispatches them to instances of their own."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.queued: list[tuple[Any, float]] = []
        self.waited_s = 0.0
        """Time during which no task ran and the next one was not due yet."""

    def enqueue(
        self, queue: str, url: str, payload: Any, *, task_id: str, delay_s: float = 0
    ) -> None:
        self.queued.append((payload, time.perf_counter() + delay_s * self.scale))

    def deliver(self, run: Callable[[Any], Any]) -> None:
        """Runs `run(task)` for every task as it falls due, until none is queued or running."""
        running: set[Future[Any]] = set()
        with ThreadPoolExecutor(max_workers=64) as pool:
            while self.queued or running:
                now = time.perf_counter()
                for item in [q for q in self.queued if q[1] <= now]:
                    self.queued.remove(item)
                    running.add(pool.submit(run, item[0]))
                if running:
                    finished, running = wait(running, timeout=0.05, return_when=FIRST_COMPLETED)
                    for future in finished:
                        future.result()
                elif self.queued:
                    pause = min(due for _, due in self.queued) - now
                    time.sleep(pause)
                    self.waited_s += pause


class TimedProviders:
    """`providers_for(project)` (google-genai for the remote models it names), each provider
    wrapped in Timed."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._wrapped: dict[str, Timed] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in self._wrapped:
            self._wrapped[name] = Timed(getattr(self._inner, name))
        return self._wrapped[name]


def union_s(spans: list[tuple[str, float, float]]) -> float:
    """Seconds during which at least one of the spans was under way."""
    total, end = 0.0, -math.inf
    for _, start, stop in sorted(spans, key=lambda s: s[1]):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def reset_peak_rss() -> None:
    with contextlib.suppress(OSError):  # "5" resets VmHWM to the current RSS (Linux ≥ 4.0)
        Path("/proc/self/clear_refs").write_text("5")


def rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1]) / 1024


def peak_rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def sample_clip() -> bytes:
    """A real 4 s H.264 clip (the local video model's), which the local stitcher concatenates.
    Drawn from noise, so that it weighs what a model's clip does (about 2 MiB), not the few
    KiB of a flat frame: the stitch's memory is measured against it."""
    import numpy as np

    from shared.pipeline.local_video import LocalVideoModel
    from shared.pipeline.ports import ClipRequest

    noise = np.random.default_rng(7).integers(0, 256, (360, LONG_SIDE, 3), dtype=np.uint8)
    frame = io.BytesIO()
    Image.fromarray(noise).save(frame, "PNG")
    request = ClipRequest(prompt="a drift", start_frame=frame.getvalue(), end_frame=None,
                          seconds=GENAI_CLIP_SECONDS, aspect_ratio="16:9")  # fmt: skip
    video = asyncio.run(LocalVideoModel().start_clip(request)).video
    assert video is not None
    return video


def run_genai(
    services: Any, scenes: int, manifest: Manifest, scale: float, clip: bytes
) -> dict[str, Any]:
    """One project, generate to stitch, its tasks delivered here after their delays, against a
    fresh stand-in (its own request log and peak in flight)."""
    from dataclasses import replace

    from shared.auth import Identity
    from shared.models.projects import GenerateRequest, ProjectStatus
    from shared.pipeline.runner import POLL_DELAY_S
    from shared.settings import get_settings
    from tests.support import gemini_standin as standin_module
    from tests.support.gemini_standin import GeminiStandin, StandinReply, VideoJob, sample_png

    image_s, clip_s = IMAGE_S * scale, (POLLS_BEFORE_DONE + 1) * POLL_DELAY_S * scale
    bound = services.settings.pipeline.concurrency
    # A distinct image per call, as a model's would be: clips are keyed by their frames.
    images = [replace(StandinReply.image(sample_png((LONG_SIDE, 360), (40 + 3 * i, 90, 160))),
                      delay_s=image_s) for i in range(2 * scenes)]  # fmt: skip
    tasks = DelayedTasks(scale)
    services.pipeline._dispatcher = lambda: tasks
    request = GenerateRequest(prompt=PROMPT, clip_seconds=GENAI_CLIP_SECONDS,
                              total_seconds=GENAI_CLIP_SECONDS * scenes, manifest_id=manifest.id,
                              take_seed=TAKE_SEED, **GENAI_MODELS)  # fmt: skip
    walls: list[tuple[str, float]] = []
    outcomes: Counter[str] = Counter()
    stitch: dict[str, float] = {}
    with GeminiStandin(images[-1]) as standin:
        standin.enqueue(*images)
        standin.default_video_job = VideoJob(video=clip, polls_before_done=POLLS_BEFORE_DONE)
        get_settings().models.gemini_base_url = standin.base_url

        def timed(name: str, work: Any, *args: Any) -> Any:
            # The wall of each task alone: tasks overlap, so the counts are the run's.
            started = time.perf_counter()
            result = work(*args)
            walls.append((name, time.perf_counter() - started))
            return result

        def deliver(task: Any) -> None:
            name = task.stage.value + (f" poll {task.poll}" if task.poll else "")
            if task.stage.value == "stitch":  # alone by then: the last task of the run
                reset_peak_rss()
                stitch["before_mib"] = rss_mib()
            outcomes[f"{name} {timed(name, services.pipeline.run, task).value}"] += 1
            if task.stage.value == "stitch":
                stitch["peak_mib"] = peak_rss_mib()

        gc.collect()
        reset_peak_rss()
        with CpuWindow(METER.emulators) as cpu, METER.phase() as tally:
            began = time.perf_counter()
            project = timed("generate", services.projects.generate, Identity(OWNER), request)
            peak = peak_rss_mib()
            tasks.deliver(deliver)
            wall = time.perf_counter() - began
        peak = max(peak, peak_rss_mib(), stitch.get("peak_mib", 0.0))
        sent = Counter(r.method for r in standin.requests)
        in_flight = standin.max_in_flight
    with METER.phase():  # reading back, for the checks
        stored = services.projects_repo.get(project.id)
        stored_scenes = services.projects_repo.scenes(project.id)
        bucket = services.settings.storage.media_bucket
        clip_bytes = sum(len(services.blobs.get(bucket, s.clip_object or "", max_bytes=2**31) or b"")
                         for s in stored_scenes)  # fmt: skip
    images_n, clips_n, polls = (
        sent[standin_module.GENERATE],
        sent[standin_module.START_VIDEO],
        sent[standin_module.POLL_VIDEO],
    )
    remote = ("image", "video", "video_poll")  # the storyboard and the stitch run locally
    model_s = union_s([s for s in tally.spans if s[0] in remote])
    overhead = wall - model_s - tasks.waited_s
    fixed = sum(w for name, w in walls if name in ("generate", "storyboard", "stitch"))
    sequential = images_n * image_s + clips_n * clip_s + overhead
    ideal = math.ceil(images_n / bound) * image_s + clip_s + fixed
    problems = []
    chunks = math.ceil(scenes / services.settings.pipeline.chunk_scenes)
    if outcomes != genai_outcomes(chunks):
        problems.append(f"outcomes {dict(outcomes)}, expected {dict(genai_outcomes(chunks))}")
    if stored is None or stored.status is not ProjectStatus.COMPLETE:
        problems.append(f"status {stored.status.value if stored else 'missing'}")
    if len(stored_scenes) != scenes or any(s.clip_object is None for s in stored_scenes):
        problems.append(f"{len(stored_scenes)} scenes stored, not all with a clip")
    if polls != (POLLS_BEFORE_DONE + 1) * clips_n:
        problems.append(f"{polls} polls for {clips_n} clip operations")
    if scale and in_flight != min(bound, max(images_n, clips_n)):
        problems.append(f"at most {in_flight} calls in flight; bound {bound}")
    if mismatch := tally.firestore.rpc_mismatch():
        problems.append(mismatch)
    return {
        "scenes": scenes, "wall_s": wall, "image_calls": images_n, "clip_operations": clips_n,
        "polls": polls, "max_in_flight": in_flight, "bound": bound, "image_s": image_s,
        "clip_s": clip_s, "model_s": model_s, "waited_s": tasks.waited_s,
        "overhead_s": overhead, "fixed_s": fixed, "sequential_s": sequential, "ideal_s": ideal,
        "reads": tally.firestore.reads, "writes": tally.firestore.writes,
        "paths": dict(sorted(tally.firestore.paths.items())), "calls": dict(tally.calls),
        "peak_rss_mib": peak, "others_share": cpu.use.others_share, "outcomes": dict(outcomes),
        "chunks": chunks, "clip_mib": clip_bytes / 2**20,
        "stitch_rss_mib": stitch.get("before_mib", 0.0),
        "stitch_peak_mib": stitch.get("peak_mib", 0.0), "problems": problems,
        "phases": [{"name": name, "wall_s": w} for name, w in walls],
    }  # fmt: skip


def genai_rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    return [[str(r["scenes"]), f"{r['wall_s']:.1f}", str(r["image_calls"]),
             f"{r['clip_operations']} ({r['polls']})", str(r["max_in_flight"]),
             f"{r['sequential_s']:.1f}", f"{r['ideal_s']:.1f}",
             f"{r['wall_s'] / r['ideal_s']:.2f}", f"{r['sequential_s'] / r['wall_s']:.1f}",
             f"{r['reads'] / r['scenes']:.1f} / {r['writes'] / r['scenes']:.1f}",
             f"{r['peak_rss_mib']:.0f}"] for r in runs]  # fmt: skip


GENAI_HEADERS = ["N", "wall s", "image calls", "clip ops (polls)", "max in flight",
                 "sequential s (computed)", "ideal s", "wall ÷ ideal", "sequential ÷ wall",
                 "reads / writes per scene", "peak RSS MiB"]  # fmt: skip


def genai_stages(run: dict[str, Any]) -> str:
    by_name: dict[str, list[float]] = {}
    for phase in run["phases"]:
        by_name.setdefault(phase["name"], []).append(phase["wall_s"])
    walls = ", ".join(f"{name} {max(w):.2f}" + (f" (longest of {len(w)})" if len(w) > 1 else "")
                      for name, w in by_name.items())  # fmt: skip
    return (f"N = {run['scenes']} ({run['chunks']} chunks): {walls} s; stitch RSS "
            f"{run['stitch_rss_mib']:.0f} → peak {run['stitch_peak_mib']:.0f} MiB for "
            f"{run['clip_mib']:.0f} MiB of clips; waited for delayed tasks {run['waited_s']:.1f} s; "
            f"model calls in flight {run['model_s']:.1f} s; the rest {run['overhead_s']:.2f} s; "
            f"others used {run['others_share']:.0%} of the CPU")  # fmt: skip


def genai_main(args: Any) -> int:
    mode = "quick" if args.quick else "full"
    scale, sizes = GENAI_SCALE[mode], GENAI_SIZES[mode]
    began = time.perf_counter()
    info = machine((*PACKAGES, "google-genai"))
    env = {"FRAMEFORK_MODELS__GEMINI_API_KEY": "bench-key",
           "FRAMEFORK_MODELS__VERTEX_API_KEY": "bench-key",
           # Production's stage lease, not the local stack's 10 s: a 13 s keyframes stage
           # would renew it, several of its concurrent scene saves at once (counts vary).
           "FRAMEFORK_TASKS__STAGE_LEASE_S": "900"}  # fmt: skip
    runs = []
    with own_stack(STATE_DIR) as stack, installed():
        use_in_this_process(stack, env)
        from shared.pipeline.providers import providers_for

        services = build_services()
        services.pipeline._providers = lambda project: TimedProviders(providers_for(project))
        METER.emulators = {n: stack.processes[n].pid for n in ("firestore", "storage")}
        clip = sample_clip()
        print(f"pipeline benchmark, genai: {mode} run, stack up in "
              f"{time.perf_counter() - began:.1f} s", flush=True)  # fmt: skip
        for scenes, at in ((3, 0.0), *((n, scale) for n in sizes)):  # first: a warm-up
            stack.reset()
            with METER.phase():
                manifest = ready_manifest(services, seed=scenes)
            run = run_genai(services, scenes, manifest, at, clip)
            print(f"  {'warm-up, no latency' if not at else ''} " + genai_stages(run)
                  + ("; PROBLEMS: " + "; ".join(run["problems"]) if run["problems"] else ""),
                  flush=True)  # fmt: skip
            if at:
                runs.append(run)
    print("\n" + text_table(GENAI_HEADERS, genai_rows(runs)))
    largest = runs[-1]
    goals = (
        {  # set for 30 scenes at full latency: not for --quick
            "within 1.5× of the ideal": largest["wall_s"] <= 1.5 * largest["ideal_s"],
            "at least 5× faster than sequential": largest["sequential_s"] >= 5 * largest["wall_s"],
        }
        if not args.quick
        else {}
    )
    report = {"mode": mode, "machine": info, "scale": scale, "image_s": IMAGE_S * scale,
              "chunk_scenes": services.settings.pipeline.chunk_scenes,
              "models": GENAI_MODELS, "run_s": time.perf_counter() - began,
              "loadavg_end": os.getloadavg(), "goals": goals, "runs": runs}  # fmt: skip
    write_genai_report(report, args.out)
    for goal, met in goals.items():
        print(f"N = {largest['scenes']}: {goal}: {'met' if met else 'NOT met'}")
    print(f"whole run {report['run_s']:.0f} s; reports in {args.out}/pipeline_genai.md and .json")
    return 1 if any(r["problems"] for r in runs) else 0


def write_genai_report(report: dict[str, Any], out: Path) -> None:
    m, runs = report["machine"], report["runs"]
    image_s, clip_s, bound = runs[0]["image_s"], runs[0]["clip_s"], runs[0]["bound"]
    problems = [f"N = {r['scenes']}: {p}" for r in runs for p in r["problems"]]
    md = [
        "# Pipeline with the google-genai providers against the Gemini stand-in",
        "",
        f"`benchmarks/pipeline.py --provider genai`, {report['mode']} mode, {m['date_utc']} UTC, "
        f"commit {m['commit']}{' (tracked files changed)' if m['working_tree_changed'] else ''}; "
        f"whole run {report['run_s']:.0f} s. Machine: {m['cores']} cores ({m['cpu_model']}), "
        f"{m['memory_gib']} GiB, Python {m['python']}, google-genai "
        f"{m['packages']['google-genai']}; load average {m['loadavg_start'][0]:.1f} at the start, "
        f"{report['loadavg_end'][0]:.1f} at the end (the machine is shared).",
        "",
        f"Conditions: `{report['models']['image_model']}` and `{report['models']['video_model']}` "
        "through google-genai's own client, pointed at `tests/support/gemini_standin.py` on "
        f"loopback (in this process); the storyboard from the local text model. Each image call "
        f"is held {image_s:g} s by the stand-in (a distinct 640×360 PNG each); each clip "
        f"operation answers \"not done\" to its first poll and done to the second, and the "
        f"runner's delayed poll task is delivered {clip_s / 2:g} s after it was queued, so a clip "
        f"is done {clip_s:g} s after it was started. Concurrency bound {bound} "
        "(FRAMEFORK_PIPELINE__CONCURRENCY) per project, shared out among a stage's chunks of "
        f"{report['chunk_scenes']} scenes (FRAMEFORK_PIPELINE__CHUNK_SCENES). Stage tasks run in "
        "this process, each on a thread of its own as it falls due (as Cloud Tasks dispatches "
        "a stage's chunks to instances of their own), against the Firestore and Storage "
        "emulators, one project per size from emptied emulators, a READY "
        f"manifest of four photos, clips of {GENAI_CLIP_SECONDS} s (a real H.264 clip of about "
        "2 MiB, drawn from noise, the same for every operation), the local stitcher. One run per size, after a warm-up "
        "without latency. The stage lease is production's 900 s (the local stack's 10 s would "
        "be renewed during the keyframes, by several concurrent scene saves at once). The "
        "stand-in's listen backlog is raised from socketserver's 5 to 128: "
        "with 5, a stage task opening 8 connections at once lost SYNs and waited 1 s for the "
        "retry, in every pass.",
        "",
        markdown_table(GENAI_HEADERS, genai_rows(runs), right=tuple(range(1, 11))),
        "",
        "- **wall**: generate to the end of the stitch, the waits for delayed tasks included.",
        f"- **sequential (computed, not run)**: image calls × {image_s:g} s + clip operations × "
        f"{clip_s:g} s + the measured rest (wall − the time any model call was in flight − the "
        "waits for delayed tasks: Firestore, Storage, the local storyboard, the stitch, "
        "orchestration). What ran beside a model call is not in the rest, so this is a lower "
        "bound of a one-at-a-time run.",
        f"- **ideal**: ceil(image calls ÷ {bound}) × {image_s:g} s + {clip_s:g} s for the clips + "
        "the measured wall of generate, storyboard and stitch (the stages without a remote "
        "call): the critical path at the bound, with the keyframes' and clips' own "
        "Firestore and Storage work taken as free.",
        "- **reads / writes per scene**: Firestore documents of the whole run "
        "(tests/support/firestore_counter.py) ÷ N; **peak RSS**: VmHWM of this process "
        "(the pipeline, the google-genai client and the stand-in's threads), reset before "
        "each project; ffmpeg and the emulators are other processes. The stitch's own: RSS "
        "when its task began (the run's memory until then) and the peak during it (reset "
        "at its start), beside the size of the clips it joined: the clips stream to files, "
        "so the peak does not grow with them.",
        "- **max in flight**: the most requests the stand-in held at once.",
        "",
        "Per stage task (wall s; a stage's chunks and poll passes: the longest):",
        "",
        *[f"- {genai_stages(r)}" for r in runs],
        "",
        (f"Goals at N = {runs[-1]['scenes']}: "
         + "; ".join(f"{g}: {'met' if ok else '**not met**'}" for g, ok in report["goals"].items())
         + ".") if report["goals"] else "Goals: set for the full run.",
        "",
        "Checks: " + ("every project completed through the expected tasks (storyboard; per "
                      "chunk: keyframes, clips started, two poll passes; stitch), two polls per "
                      "clip operation, "
                      "the stand-in saw the bound reached, the client's RPCs matched the counts."
                      if not problems else "\n\n" + "\n".join(f"- {p}" for p in problems)),
        "",
    ]  # fmt: skip
    write_atomically(out / "pipeline_genai.md", "\n".join(md))
    write_json(out / "pipeline_genai.json", report)


if __name__ == "__main__":
    sys.exit(main())
