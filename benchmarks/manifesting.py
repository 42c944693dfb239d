"""Manifesting throughput beside raw model time, batching and session reuse, and the model
service's memory and cold start, on this machine.

    .venv/bin/python benchmarks/manifesting.py            # N = 8, 32, 128: under 10 minutes
    .venv/bin/python benchmarks/manifesting.py --quick    # N = 8 only: about a minute

Starts its own emulators (LocalStack under .local/bench-manifesting, stopped at the end and
with this process) and runs the manifesting engine in-process on the real offline models
(YOLOv3-tiny on OpenCV, YuNet + SFace on onnxruntime, the local describer), built by
model_service.factory as the service builds them. Photos cycle through .local/sample-photos
(scripts/sample_photos), each copy slightly cropped, rescaled and brightened so that no two
share a content hash and nothing is deduplicated.

Measured, each repeat interleaving everything so that passing load falls on one sample of
each figure rather than on every sample of one:
1. jobs: a whole manifesting job (engine.run, from lease to READY) on N photos uploaded
   beforehand through UploadIngest.direct_upload; images per second;
2. the same images through the models alone, right after each job: detector.detect on the
   decoded uploads and faces.analyze on the images the faces step analysed (uploads and
   person crops), in the job's own batches, with no Firestore or Storage; job ÷ model time
   is the job's overhead over pure inference. Where the job spends its time comes from
   wrappers installed around the engine's collaborators in this process (repositories,
   blob store, models, encoders), never from changes to the product;
3. batching and session reuse: one model call per image against the job's batches (and the
   detector with a real forward batch of 8, the faces with one onnxruntime thread), models
   built and loaded anew per image (what a naive service would do) against the loaded
   sessions, and a whole job run one image per batch (the engine's BATCH set to 1 in this
   process) against the usual 8;
4. the model service: `bentoml serve model_service.service:ModelService` from spawn to the
   first 200 of GET /readyz, then the memory of its process tree (/proc: RSS, peak RSS,
   PSS) when ready and after each of two job-sized requests (POST /tasks/run_job on
   manifests of 8 photos); and the models alone in a bare interpreter, for BentoML's share.
Medians of 3 repeats (--quick: N = 8 only, 3 job repeats, the rest once). The machine is
shared: every sample records the share of the cores that other processes used meanwhile.
Work that would overrun the time budget is skipped and listed, the largest jobs' later
repeats first. Prints a table and writes benchmarks/reports/manifesting.md and
manifesting.json (every single measurement), with manifesting_parts.png (where a job's time
goes); --out DIR writes them elsewhere.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from common import (
    ROOT,
    CpuUse,
    CpuWindow,
    QueuedTasks,
    arguments,
    bar_chart,
    child_env,
    machine,
    markdown_table,
    median,
    own_stack,
    spawned,
    spread,
    text_table,
    tree_memory,
    uploaded_manifest,
    use_in_this_process,
    write_atomically,
    write_json,
)
from PIL import Image, ImageEnhance

from infra.local.stack import LocalStack, free_port

T = TypeVar("T")
STATE_DIR = ROOT / ".local" / "bench-manifesting"
PHOTOS = ROOT / ".local" / "sample-photos"
OFFLINE_MODELS = ROOT / ".models" / "offline"
USER = "bench-manifesting"
KINDS = {"bus": "ENVIRONMENT"}
"""Asset type per sample photo (by stem), as the demo uploads them; CHARACTER otherwise."""
SEED = 20240601
# The offline backends whatever a shell's FRAMEFORK_MODELS__* say: the figures are theirs.
MODEL_ENV = {
    "FRAMEFORK_MODELS__DETECTOR": "darknet-yolov3-tiny",
    "FRAMEFORK_MODELS__FACES": "yunet-sface",
    "FRAMEFORK_MODELS__DESCRIBER": "local",
    "FRAMEFORK_MODELS__OFFLINE_DIR": str(OFFLINE_MODELS),
}
SERVICE_READY_TIMEOUT_S = 120.0
SERVICE_JOB_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Profile:
    sizes: tuple[int, ...]
    repeats: int
    cold_starts: int
    model_repeats: int
    """Repeats of the batching and session measurements (the models alone, no stack)."""
    batching_n: int
    """The job whose model inputs the batching and session measurements reuse."""
    batching_faces: int
    """At most this many of that job's face images (the faces dominate the batching time)."""
    naive_images: int
    """Images per model built and loaded anew (each costs a whole model load)."""
    batch1_n: int | None
    """Photos of the whole job also run with the engine's BATCH = 1 (None: not run)."""
    service_photos: int
    budget_s: float
    """Work that would not fit in this is skipped (and listed in the report)."""
    hard_limit_s: int
    """Past this the run is interrupted: the stack and the service are stopped."""


FULL = Profile(
    sizes=(8, 32, 128), repeats=3, cold_starts=3, model_repeats=3, batching_n=32,
    batching_faces=32, naive_images=8, batch1_n=8, service_photos=8,
    budget_s=560, hard_limit_s=595,
)  # fmt: skip
QUICK = Profile(
    sizes=(8,), repeats=3, cold_starts=1, model_repeats=1, batching_n=8,
    batching_faces=16, naive_images=2, batch1_n=None, service_photos=8,
    budget_s=80, hard_limit_s=88,
)  # fmt: skip


class BenchError(RuntimeError):
    pass


class OutOfTime(BaseException):
    """Raised by the hard time limit's alarm; a BaseException so no `except Exception` in the
    code it interrupts swallows it."""


# ---------------------------------------------------------------------------------------------
# Photos


@dataclass(frozen=True)
class Photo:
    name: str
    source: str
    asset_type: str
    data: bytes
    content_type: str


def make_photos(count: int) -> list[Photo]:
    """`count` photos cycling through the samples, each copy a little different: cut by up to
    3% per side, scaled by 0.9 to 1.05, brightness by ±8%. Content hashes must all differ,
    or the media bucket (named by hash) would share objects between copies."""
    sources = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not sources:
        raise BenchError(f"no photos in {PHOTOS}: run scripts/sample_photos")
    decoded = {p: Image.open(p).convert("RGB") for p in sources}
    rng = random.Random(SEED)
    photos = []
    for index in range(count):
        path = sources[index % len(sources)]
        image = decoded[path]
        width, height = image.size
        left, top, right, bottom = (rng.uniform(0, 0.03) for _ in range(4))
        varied = image.crop(
            (
                round(width * left),
                round(height * top),
                width - round(width * right),
                height - round(height * bottom),
            )
        )
        scale = rng.uniform(0.9, 1.05)
        varied = varied.resize(
            (max(1, round(varied.width * scale)), max(1, round(varied.height * scale))),
            Image.Resampling.LANCZOS,
        )
        varied = ImageEnhance.Brightness(varied).enhance(rng.uniform(0.92, 1.08))
        out = io.BytesIO()
        if path.suffix.lower() == ".png":
            varied.save(out, "PNG")
            content_type = "image/png"
        else:
            varied.save(out, "JPEG", quality=90)
            content_type = "image/jpeg"
        photos.append(
            Photo(
                name=f"{path.stem} {index:03d}",
                source=path.name,
                asset_type=KINDS.get(path.stem, "CHARACTER"),
                data=out.getvalue(),
                content_type=content_type,
            )
        )
    if len({hashlib.sha256(p.data).digest() for p in photos}) != count:
        raise BenchError("two photo variants came out identical")
    return photos


# ---------------------------------------------------------------------------------------------
# Instrumentation (in this process only: wrappers around what the engine is given and around
# the module-level helpers it calls)


class Profiler:
    """Exclusive wall time per category and thread: time spent in a nested category is taken
    out of its parent, so the categories of the main thread add up to at most a job's wall
    time. The engine's Storage threads overlap the main thread: their time is kept apart, in
    `background`. Calls are counted on every thread."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.background: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.enabled = False
        self._stacks = threading.local()
        self._main = threading.main_thread().ident
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def on(self) -> Iterator[None]:
        self.enabled = True
        try:
            yield
        finally:
            self.enabled = False

    def _add(self, category: str, seconds: float) -> None:
        on_main = threading.get_ident() == self._main
        with self._lock:
            (self.totals if on_main else self.background)[category] += seconds

    @contextlib.contextmanager
    def _timing(self, category: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        stack: list[list[Any]] = self._stacks.__dict__.setdefault("stack", [])
        now = time.perf_counter()
        if stack:  # the parent's time so far is its own; from now on it is ours
            parent = stack[-1]
            self._add(parent[0], now - parent[1])
        stack.append([category, now])
        with self._lock:
            self.calls[category] += 1
        try:
            yield
        finally:
            now = time.perf_counter()
            category, since = stack.pop()
            self._add(category, now - since)
            if stack:
                stack[-1][1] = now

    def wrap(self, category: str, fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> T:
            with self._timing(category):
                return fn(*args, **kwargs)

        return timed

    def wrap_async(self, category: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        # The engine runs the describer with asyncio.run on the main thread; its work goes to
        # worker threads (asyncio.to_thread), so the time awaited here is the describer's.
        @functools.wraps(fn)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            with self._timing(category):
                return await fn(*args, **kwargs)

        return timed


class TimedCalls:
    """Forwards attribute access to `target`; its methods are timed under `category`."""

    def __init__(self, target: Any, category: str | Callable[[str], str], profiler: Profiler):
        self._target = target
        self._category = category
        self._profiler = profiler

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value
        category = self._category(name) if callable(self._category) else self._category
        return self._profiler.wrap(category, value)


class Recording:
    """A model as the engine sees it, its `method` (detect, analyze) timed under `category`:
    every call's images and the number of things found in each are kept, so that the same
    inputs can be run again through the model alone. Anything else is the model's own."""

    def __init__(self, inner: Any, method: str, category: str, profiler: Profiler) -> None:
        self.inner = inner
        self._method = method
        self._timed = profiler.wrap(category, getattr(inner, method))
        self.calls: list[list[Image.Image]] = []
        self.results: list[list[int]] = []

    def __getattr__(self, name: str) -> Any:
        if name != self._method:
            return getattr(self.inner, name)

        def recorded(images: Sequence[Image.Image]) -> Any:
            found = self._timed(images)
            self.calls.append(list(images))
            self.results.append([len(f) for f in found])
            return found

        return recorded


STEP_METHODS = ("contact_sheet", "detection", "faces", "grouping", "describe", "finalize")


@contextlib.contextmanager
def instrumented(profiler: Profiler, step_times: dict[str, float]) -> Iterator[None]:
    """Times the engine's steps (inclusive) and the helpers it calls by module-level name
    (exclusive, through the profiler); undone on exit."""
    from shared.images import decode_rgb
    from shared.manifesting import engine as engine_module
    from shared.manifesting import image_cache
    from shared.repositories.manifests import ManifestRepository

    patches: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, replacement: Any) -> None:
        patches.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)

    for name, category in (
        ("store_derived_image", "encode derived images (JPEG + WebP thumbnail)"),
        ("make_contact_sheet", "render contact sheet"),
        ("derived_assets", "plan and cut crops"),
        ("assign_face_groups", "face grouping"),
        ("_stored", "waiting for derived images to be stored"),
    ):
        patch(engine_module, name, profiler.wrap(category, getattr(engine_module, name)))
    describe_all = engine_module._describe_all
    patch(engine_module, "_describe_all", profiler.wrap_async("model: describer", describe_all))
    patch(image_cache, "decode_rgb", profiler.wrap("decode images", decode_rgb))
    # Each commit is a write to the manifest document (with its revision claim): Cloud
    # Firestore sustains about one write per second on one document, so their count matters
    # beyond their time here.
    commit = ManifestRepository._commit
    patch(ManifestRepository, "_commit", profiler.wrap("Firestore: manifest commits", commit))

    def step_timer(step: str, method: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(method)
        def timed(self: Any) -> None:
            start = time.perf_counter()
            try:
                method(self)
            finally:
                step_times[step] = step_times.get(step, 0.0) + time.perf_counter() - start

        return timed

    for step in STEP_METHODS:
        patch(engine_module._Run, step, step_timer(step, getattr(engine_module._Run, step)))
    try:
        yield
    finally:
        for owner, name, original in reversed(patches):
            setattr(owner, name, original)


def cpu_row(use: CpuUse) -> dict[str, float]:
    """A stretch's CPU as the report keeps it: this process, each emulator, the others."""
    groups = {f"{name} cpu_s": seconds for name, seconds in use.groups_s.items()}
    return {"wall_s": use.wall_s, "own_cpu_s": use.own_s, **groups,
            "others_share": use.others_share, "steal_share": use.steal_share}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The run's objects


@dataclass
class Context:
    profile: Profile
    photos: list[Photo]
    started: float
    stack: LocalStack = field(init=False)
    registry: Any = None
    uploads: Any = None
    jobs: Any = None
    job_repo: Any = None
    manifest_repo: Any = None
    settings: Any = None
    models: Any = None
    """The engine's Models with the loaded offline backends."""
    identity: Any = None
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)
    """Longest duration of each kind of work so far, to judge what still fits in the budget."""

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def fits(self, work: str, guess_s: float, reserve_s: float = 0.0) -> bool:
        """Whether `work` (the longest it took so far, else `guess_s`) fits in what is left of
        the budget once `reserve_s` is kept for work that must still come after it."""
        needed = self.durations.get(work, guess_s)
        left = self.profile.budget_s - self.elapsed()
        if needed + reserve_s <= left:
            return True
        kept = f", {reserve_s:.0f} s of them kept for the later repeats" if reserve_s else ""
        self.skipped.append(f"{work}: needs about {needed:.0f} s, {left:.0f} s left{kept}")
        print(f"  skipped {self.skipped[-1]}", flush=True)
        return False

    @contextlib.contextmanager
    def timing(self, work: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        # The longest seen: passing load makes repeats differ, and overrunning costs more.
        self.durations[work] = max(self.durations.get(work, 0.0), time.monotonic() - start)


def prepare(ctx: Context) -> dict[str, Any]:
    """Points this process at the stack and builds what the API and the engine use."""
    from model_service.factory import build_describer, build_detector, build_faces
    from shared.auth import Identity
    from shared.clients import firestore_client
    from shared.manifesting.engine import Models
    from shared.manifesting.jobs import ManifestingJobs
    from shared.registry import Registry
    from shared.repositories.jobs import JobRepository
    from shared.repositories.manifests import ManifestRepository
    from shared.settings import get_settings
    from shared.storage import default_blob_store
    from shared.uploads import UploadIngest

    use_in_this_process(ctx.stack, MODEL_ENV)
    settings = get_settings()
    db = firestore_client()
    ctx.settings = settings
    ctx.identity = Identity(uid=USER)
    ctx.manifest_repo = ManifestRepository(db)
    ctx.job_repo = JobRepository(db)
    ctx.registry = Registry(ctx.manifest_repo)
    ctx.uploads = UploadIngest(
        ctx.manifest_repo, ctx.registry, default_blob_store(), settings.storage
    )
    # The job tasks it enqueues are never delivered: the benchmark runs each job itself.
    dispatcher = QueuedTasks()
    ctx.jobs = ManifestingJobs(
        ctx.registry, ctx.manifest_repo, ctx.job_repo, lambda: dispatcher, settings.tasks
    )
    start = time.perf_counter()
    models = Models(
        build_detector(settings.models), build_faces(settings.models), build_describer(settings.models)
    )  # fmt: skip
    models.detector.load()
    models.faces.load()
    ctx.models = models
    return {"models_load_s": time.perf_counter() - start, "models": models.names()}


def seed_manifest(ctx: Context, photos: Sequence[Photo], label: str) -> tuple[str, float]:
    """A manifest with one uploaded asset per photo; returns its id and the upload time."""
    start = time.perf_counter()
    uploaded = [(p.asset_type, p.name, p.data, p.content_type) for p in photos]
    manifest_id = uploaded_manifest(ctx.registry, ctx.uploads, ctx.identity, label, uploaded)
    return manifest_id, time.perf_counter() - start


def chunked(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def timed(work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# 1 and 2: jobs, and the same images through the models alone


@dataclass
class JobSample:
    n: int
    repeat: int
    batch: int
    job_s: float
    upload_s: float
    steps_s: dict[str, float]
    exclusive_s: dict[str, float]
    background_s: dict[str, float]
    """Time on the engine's Storage threads, overlapping the main thread's."""
    calls: dict[str, int]
    model_in_job_s: float
    raw_detector_s: float
    raw_faces_s: float
    detector_images: int
    face_images: int
    counters: dict[str, Any]
    job_reported_s: float | None
    cpu: dict[str, float]
    raw_cpu: dict[str, float]
    rerun_matches: bool

    @property
    def raw_model_s(self) -> float:
        return self.raw_detector_s + self.raw_faces_s


def run_job(
    ctx: Context, n: int, repeat: int, *, batch: int | None = None, keep_inputs: bool = False
) -> tuple[JobSample, Recording, Recording]:
    from shared.manifesting import engine as engine_module
    from shared.manifesting.engine import STEPS, ManifestingEngine, Models, RunOutcome
    from shared.models.jobs import JobStatus
    from shared.models.manifests import ManifestStatus
    from shared.storage import default_blob_store

    ctx.stack.reset()  # every job starts from empty emulators: the same state each repeat
    manifest_id, upload_s = seed_manifest(ctx, ctx.photos[:n], f"bench {n} photos")
    job = ctx.jobs.start(ctx.identity, manifest_id)

    profiler = Profiler()
    detector = Recording(ctx.models.detector, "detect", "model: detector", profiler)
    faces = Recording(ctx.models.faces, "analyze", "model: faces", profiler)
    engine = ManifestingEngine(
        TimedCalls(ctx.manifest_repo, "Firestore: reads (and change planning)", profiler),  # type: ignore[arg-type]
        TimedCalls(ctx.job_repo, "Firestore: job progress", profiler),  # type: ignore[arg-type]
        TimedCalls(default_blob_store(), lambda name: f"Storage: {name}", profiler),
        ctx.settings.storage,
        ctx.settings.models,
        Models(detector, faces, ctx.models.describer),
    )
    groups = {name: ctx.stack.processes[name].pid for name in ("firestore", "storage")}
    steps: dict[str, float] = {}
    saved_batch = engine_module.BATCH
    if batch is not None:
        engine_module.BATCH = batch
    try:
        with instrumented(profiler, steps), profiler.on(), CpuWindow(groups) as cpu:
            start = time.perf_counter()
            outcome = engine.run(job.id)
            job_s = time.perf_counter() - start
    finally:
        engine_module.BATCH = saved_batch

    done = ctx.job_repo.get(job.id)
    manifest = ctx.manifest_repo.get(manifest_id)
    where = f"job on {n} photos (repeat {repeat + 1}, batch {batch or saved_batch})"
    if outcome is not RunOutcome.DONE or done is None or done.status is not JobStatus.SUCCEEDED:
        raise BenchError(f"{where} ended {outcome}: {done and done.error}")
    if done.steps_done != list(STEPS) or done.counters.images_detected != n:
        ctx.problems.append(f"{where}: steps {done.steps_done}, counters {done.counters}")
    if done.failures:
        ctx.problems.append(f"{where}: failures {[f.reason for f in done.failures][:3]}")
    if manifest is None or manifest.status is not ManifestStatus.READY:
        ctx.problems.append(f"{where}: manifest {manifest and manifest.status}")

    # The same images through the models alone, in the job's own batches.
    det_results: list[list[int]] = []
    face_results: list[list[int]] = []
    with CpuWindow() as raw_cpu:
        raw_detector_s = timed(
            lambda: det_results.extend(
                [len(d) for d in ctx.models.detector.detect(c)] for c in detector.calls
            )
        )
        raw_faces_s = timed(
            lambda: face_results.extend(
                [len(f) for f in ctx.models.faces.analyze(c)] for c in faces.calls
            )
        )
    rerun_matches = det_results == detector.results and face_results == faces.results

    exclusive = dict(profiler.totals)
    exclusive["engine's own work (the rest)"] = max(0.0, job_s - sum(exclusive.values()))
    reported = None
    if done.started_at and done.finished_at:
        reported = (done.finished_at - done.started_at).total_seconds()
    sample = JobSample(
        n=n,
        repeat=repeat,
        batch=batch or saved_batch,
        job_s=job_s,
        upload_s=upload_s,
        steps_s=steps,
        exclusive_s=exclusive,
        background_s=dict(profiler.background),
        calls=dict(profiler.calls),
        model_in_job_s=exclusive.get("model: detector", 0.0) + exclusive.get("model: faces", 0.0),
        raw_detector_s=raw_detector_s,
        raw_faces_s=raw_faces_s,
        detector_images=sum(len(c) for c in detector.calls),
        face_images=sum(len(c) for c in faces.calls),
        counters=done.counters.model_dump(),
        job_reported_s=reported,
        cpu=cpu_row(cpu.use),
        raw_cpu=cpu_row(raw_cpu.use),
        rerun_matches=rerun_matches,
    )
    if not rerun_matches:
        ctx.problems.append(
            f"{where}: the models alone found other detections or faces than in the job"
        )
    if not keep_inputs:
        detector.calls.clear()
        faces.calls.clear()
    return sample, detector, faces


# ---------------------------------------------------------------------------------------------
# 3: batching and session reuse


def batching_repeat(
    ctx: Context,
    det_images: list[Image.Image],
    face_images: list[Image.Image],
    forward8: Any,
    faces_1_thread: Any,
) -> dict[str, float]:
    """Seconds for the same images by each way of calling the loaded models; the variants
    alternate within the repeat so that passing load hits them alike."""
    from shared.manifesting.engine import BATCH

    detector, faces = ctx.models.detector, ctx.models.faces
    return {
        "detector: one call per image": timed(lambda: [detector.detect([i]) for i in det_images]),
        f"detector: calls of {BATCH} (the job's)": timed(
            lambda: [detector.detect(c) for c in chunked(det_images, BATCH)]
        ),
        f"detector: calls of {BATCH}, forward batch {BATCH}": timed(
            lambda: [forward8.detect(c) for c in chunked(det_images, BATCH)]
        ),
        "faces: one call per image": timed(lambda: [faces.analyze([i]) for i in face_images]),
        f"faces: calls of {BATCH} (the job's)": timed(
            lambda: [faces.analyze(c) for c in chunked(face_images, BATCH)]
        ),
        "faces: one call for all": timed(lambda: faces.analyze(face_images)),
        f"faces: calls of {BATCH}, 1 onnxruntime thread": timed(
            lambda: [faces_1_thread.analyze(c) for c in chunked(face_images, BATCH)]
        ),
    }


def naive_repeat(
    ctx: Context, det_images: list[Image.Image], face_images: list[Image.Image]
) -> dict[str, float]:
    """Per image: a model built and loaded anew for it (a naive service), against the loaded
    model called once per image, on the same images; seconds per image."""
    from model_service.factory import build_detector, build_faces

    settings = ctx.settings.models
    loads: dict[str, list[float]] = {"detector": [], "faces": []}

    def fresh(build: Callable[[Any], Any], kind: str) -> Any:
        start = time.perf_counter()
        model = build(settings)
        model.load()
        loads[kind].append(time.perf_counter() - start)
        return model

    k = ctx.profile.naive_images
    dets, faces = det_images[:k], face_images[:k]
    reused_det = timed(lambda: [ctx.models.detector.detect([i]) for i in dets]) / len(dets)
    naive_det = timed(lambda: [fresh(build_detector, "detector").detect([i]) for i in dets])
    reused_faces = timed(lambda: [ctx.models.faces.analyze([i]) for i in faces]) / len(faces)
    naive_faces = timed(lambda: [fresh(build_faces, "faces").analyze([i]) for i in faces])
    return {
        "detector: loaded once": reused_det,
        "detector: built and loaded per image": naive_det / len(dets),
        "detector: build + load alone": median(loads["detector"]),
        "faces: loaded once": reused_faces,
        "faces: built and loaded per image": naive_faces / len(faces),
        "faces: build + load alone": median(loads["faces"]),
    }


# ---------------------------------------------------------------------------------------------
# 4: the model service


def service_env(ctx: Context) -> dict[str, str]:
    # As the stack runs it: no usage reports leave the machine, BentoML's home stays here.
    return child_env(
        ctx.stack, {"BENTOML_DO_NOT_TRACK": "true", "BENTOML_HOME": str(STATE_DIR / "bentoml")}
    )


def http_status(url: str, *, body: dict[str, Any] | None = None, timeout: float = 2.0) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            reply.read()
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def service_cold_start(ctx: Context, index: int) -> dict[str, Any]:
    from shared.models.jobs import JobStatus

    # Two jobs of different photos, the second to see whether memory keeps growing. Both are
    # ready before the service starts: preparing them must not load the machine meanwhile.
    ctx.stack.reset()
    count = ctx.profile.service_photos
    jobs = []
    for offset in (0, count):
        photos = ctx.photos[offset : offset + count]
        manifest_id, _ = seed_manifest(ctx, photos, f"bench service {index}.{offset}")
        jobs.append(ctx.jobs.start(ctx.identity, manifest_id))

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(ROOT / ".venv/bin/bentoml"), "serve", "model_service.service:ModelService",
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    log = STATE_DIR / "logs" / f"models-{index}.log"
    start = time.perf_counter()
    with spawned(argv, service_env(ctx), log) as child:
        first_answer = None
        while True:
            status = http_status(f"{url}/readyz", timeout=1.0)
            now = time.perf_counter() - start
            if status and first_answer is None:
                first_answer = now
            if status == 200:
                ready_s = now
                break
            if child.poll() is not None:
                raise BenchError(f"the service exited with {child.returncode}; see {log}")
            if now > SERVICE_READY_TIMEOUT_S:
                raise BenchError(f"the service was not ready in {SERVICE_READY_TIMEOUT_S} s")
            time.sleep(0.05)
        at_ready = tree_memory(child.pid)
        requests = []
        for job in jobs:
            request_start = time.perf_counter()
            status = http_status(
                f"{url}/tasks/run_job", body={"job_id": job.id}, timeout=SERVICE_JOB_TIMEOUT_S
            )
            requests.append(
                {
                    "seconds": time.perf_counter() - request_start,
                    "http_status": status,
                    "memory": tree_memory(child.pid),
                }
            )
    for number, (job, request) in enumerate(zip(jobs, requests, strict=True), start=1):
        done = ctx.job_repo.get(job.id)
        if request["http_status"] != 200 or done is None or done.status is not JobStatus.SUCCEEDED:
            ctx.problems.append(
                f"service start {index + 1}, job {number}: HTTP {request['http_status']}, "
                f"job {done and done.status} {done and done.error}"
            )
    return {
        "ready_s": ready_s,
        "first_http_answer_s": first_answer,
        "memory_at_ready": at_ready,
        "job_photos": count,
        "job_request_s": requests[0]["seconds"],
        "memory_after_job": requests[0]["memory"],
        "second_job_request_s": requests[1]["seconds"],
        "memory_after_second_job": requests[1]["memory"],
        "requests": requests,
    }


MODELS_ALONE = """
import json, sys, time
start = time.perf_counter()
from model_service.factory import build_describer, build_detector, build_faces
from shared.settings import get_settings
imported = time.perf_counter()
settings = get_settings().models
detector, faces = build_detector(settings), build_faces(settings)
build_describer(settings)
detector.load(); faces.load()
loaded = time.perf_counter()
from PIL import Image
images = [Image.open(path).convert("RGB") for path in sys.argv[1:]]
detector.detect(images); faces.analyze(images)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({
    "import_s": imported - start, "load_s": loaded - imported,
    "rss_mib": int(status["VmRSS"].split()[0]) / 1024,
    "peak_rss_mib": int(status["VmHWM"].split()[0]) / 1024,
}))
"""


def models_alone(ctx: Context) -> dict[str, Any]:
    """The offline models in a bare interpreter, loaded and used once: the service's memory
    less BentoML's."""
    photos = sorted(str(p) for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MODELS_ALONE, *photos],
        cwd=ROOT, env=service_env(ctx), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"models alone failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


# ---------------------------------------------------------------------------------------------
# The run


def _alarm(signum: int, frame: Any) -> None:
    raise OutOfTime()


def run(profile: Profile, quick: bool) -> dict[str, Any]:
    packages = ("opencv-python-headless", "onnxruntime", "numpy", "pillow", "bentoml",
                "google-cloud-firestore")  # fmt: skip
    onnx_threads = os.environ.get("FRAMEFORK_MODELS__ONNX_THREADS") or "0 (one per core)"
    report: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "machine": machine(packages, onnx_threads=onnx_threads),
    }
    report["profile"] = profile.__dict__
    count = max(*profile.sizes, 2 * profile.service_photos, profile.batching_n)
    print(f"photos: making {count} variants of the photos in {PHOTOS}", flush=True)
    photos = make_photos(count)
    ctx = Context(profile=profile, photos=photos, started=time.monotonic())
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(profile.hard_limit_s)
    jobs: list[JobSample] = []
    batch1: list[JobSample] = []
    batching: list[dict[str, Any]] = []
    naive: list[dict[str, Any]] = []
    service: list[dict[str, Any]] = []
    det_images: list[Image.Image] = []
    face_images: list[Image.Image] = []
    forward8: Any = None
    faces_1_thread: Any = None
    try:
        print(f"stack: starting emulators under {STATE_DIR}", flush=True)
        stack_start = time.perf_counter()
        with own_stack(STATE_DIR) as ctx.stack:
            report["stack_start_s"] = time.perf_counter() - stack_start
            report.update(prepare(ctx))
            # Before any load of ours: a subprocess, alone on the machine but for others' work.
            report["models_alone"] = models_alone(ctx)
            # Unrecorded: the first job also opens the clients' connections and warms the models.
            run_job(ctx, 4, -1)
            # The largest job is the longest work by far: it comes last in each repeat, and its
            # later repeats run only if the cheaper figures' remaining repeats still fit after
            # them, so that a slow machine loses samples of one figure rather than whole figures.
            sizes = sorted(profile.sizes)
            last = sizes[-1] if len(sizes) > 1 else None
            every_repeat = [(f"job N={n}", 2.0 * n) for n in sizes if n != last]
            if profile.batch1_n:
                every_repeat.append((f"job N={profile.batch1_n} batch 1", 3.0 * profile.batch1_n))

            def reserve_after(repeat: int) -> float:
                later = [
                    *(work for r in range(repeat + 1, profile.repeats) for work in every_repeat),
                    *(
                        work
                        for _ in range(repeat + 1, profile.model_repeats)
                        for work in (("batching", 20.0), ("naive", 10.0))
                    ),
                    *(("service", 40.0) for _ in range(repeat + 1, profile.cold_starts)),
                ]
                return sum(ctx.durations.get(work, guess) for work, guess in later)

            def job(n: int, repeat: int, reserve_s: float = 0.0) -> None:
                nonlocal det_images, face_images
                # Until a job of this size has run, its time is scaled from the largest that has
                # (a job's work grows about linearly with its photos; 1.25 for what grows faster).
                done = [m for m in sizes if f"job N={m}" in ctx.durations]
                guess = (
                    1.25 * n / done[-1] * ctx.durations[f"job N={done[-1]}"] if done else 2.0 * n
                )
                if not ctx.fits(f"job N={n}", guess, reserve_s):
                    return
                keep = repeat == 0 and n == profile.batching_n
                with ctx.timing(f"job N={n}"):
                    sample, detector, faces = run_job(ctx, n, repeat, keep_inputs=keep)
                jobs.append(sample)
                print(
                    f"  repeat {repeat + 1} N={n:<4} job {sample.job_s:6.2f} s "
                    f"({n / sample.job_s:5.2f} img/s)  models alone {sample.raw_model_s:6.2f} s",
                    flush=True,
                )
                if keep:
                    det_images = [i for call in detector.calls for i in call]
                    face_images = [i for call in faces.calls for i in call]
                    face_images = face_images[: profile.batching_faces]

            for repeat in range(profile.repeats):
                for n in sizes:
                    if n != last:
                        job(n, repeat)
                n1 = profile.batch1_n
                if n1 and ctx.fits(f"job N={n1} batch 1", 3.0 * n1):
                    with ctx.timing(f"job N={n1} batch 1"):
                        sample, _, _ = run_job(ctx, n1, repeat, batch=1)
                    batch1.append(sample)
                    print(
                        f"  repeat {repeat + 1} N={n1:<4} job, batch 1: {sample.job_s:6.2f} s",
                        flush=True,
                    )
                models_turn = repeat < profile.model_repeats
                if models_turn and det_images and face_images and ctx.fits("batching", 20.0):
                    if forward8 is None:
                        from model_service.backends.darknet_yolo import DarknetYoloDetector
                        from model_service.backends.yunet_sface import YuNetSFaceAnalyzer

                        forward8 = DarknetYoloDetector(OFFLINE_MODELS, batch_size=8)
                        forward8.load()
                        # OpenCV sets a network up on its first forward pass (about half a
                        # second): not part of what a batch costs.
                        forward8.detect(det_images[:8])
                        # The session setting a deployment can lower (FRAMEFORK_MODELS__ONNX_THREADS):
                        # one intra-op thread instead of one per core.
                        faces_1_thread = YuNetSFaceAnalyzer(OFFLINE_MODELS, threads=1)
                        faces_1_thread.load()
                        faces_1_thread.analyze(face_images[:8])
                    with ctx.timing("batching"), CpuWindow() as cpu:
                        seconds = batching_repeat(
                            ctx, det_images, face_images, forward8, faces_1_thread
                        )
                    batching.append({"seconds": seconds, "cpu": cpu_row(cpu.use)})
                if models_turn and det_images and face_images and ctx.fits("naive", 10.0):
                    with ctx.timing("naive"), CpuWindow() as cpu:
                        seconds = naive_repeat(ctx, det_images, face_images)
                    naive.append({"seconds": seconds, "cpu": cpu_row(cpu.use)})
                if repeat < profile.cold_starts and ctx.fits("service", 40.0):
                    with ctx.timing("service"):
                        service.append(service_cold_start(ctx, repeat))
                    print(
                        f"  repeat {repeat + 1} service ready in {service[-1]['ready_s']:.1f} s, "
                        f"{service[-1]['memory_after_job']['rss_mib']:.0f} MiB RSS after a job",
                        flush=True,
                    )
                if last is not None:
                    # Its first repeat goes before anything of the later repeats: one sample of a
                    # figure is worth more than a third of another.
                    job(last, repeat, reserve_after(repeat) if repeat else 0.0)
            signal.alarm(0)  # done in time: the stack stops uninterrupted
    except OutOfTime:
        ctx.problems.append(f"interrupted at the hard limit of {profile.hard_limit_s} s")
    finally:
        signal.alarm(0)
    report.update(
        wall_s=ctx.elapsed(),
        jobs=[s.__dict__ | {"raw_model_s": s.raw_model_s} for s in jobs],
        jobs_batch1=[s.__dict__ | {"raw_model_s": s.raw_model_s} for s in batch1],
        batching=batching,
        naive=naive,
        service=service,
        skipped=ctx.skipped,
        problems=ctx.problems,
        photo_sources=sorted({p.source for p in photos}),
        batching_inputs={
            "detector_images": len(det_images),
            "face_images": len(face_images),
            "from_job_n": profile.batching_n,
        },
    )
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["summary"] = summarise(report)
    return report


# ---------------------------------------------------------------------------------------------
# Summary and reports


NOISY_SHARE = 0.25
"""Samples during which others used more than this share of all cores are listed as noisy."""


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"jobs": {}, "where": {}, "noisy": []}
    by_n: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for sample in report["jobs"]:
        by_n[sample["n"]].append(sample)
        if sample["cpu"]["others_share"] > NOISY_SHARE:
            summary["noisy"].append(
                f"job N = {sample['n']}, repeat {sample['repeat'] + 1}: others used "
                f"{100 * sample['cpu']['others_share']:.0f}% of the cores"
            )
    for n, samples in sorted(by_n.items()):
        job = spread(s["job_s"] for s in samples)
        overheads = [s["job_s"] / s["raw_model_s"] for s in samples]
        summary["jobs"][n] = {
            "job_s": job,
            "images_per_s": n / job["median"],
            "ms_per_image": 1000 * job["median"] / n,
            "raw_model_s": median(s["raw_model_s"] for s in samples),
            "raw_detector_s": median(s["raw_detector_s"] for s in samples),
            "raw_faces_s": median(s["raw_faces_s"] for s in samples),
            "model_in_job_s": median(s["model_in_job_s"] for s in samples),
            "describer_s": median(s["exclusive_s"].get("model: describer", 0.0) for s in samples),
            "overhead": median(overheads),
            "overhead_min_max": (min(overheads), max(overheads)),
            "detector_images": median(s["detector_images"] for s in samples),
            "face_images": median(s["face_images"] for s in samples),
            "crops": median(s["counters"]["crops_created"] for s in samples),
            "faces_found": median(s["counters"]["faces_found"] for s in samples),
            "upload_s": median(s["upload_s"] for s in samples),
            "others_share": median(s["cpu"]["others_share"] for s in samples),
            "others_share_max": max(s["cpu"]["others_share"] for s in samples),
        }
        steps: dict[str, list[float]] = defaultdict(list)
        parts: dict[str, list[float]] = defaultdict(list)
        for s in samples:
            for step, seconds in s["steps_s"].items():
                steps[step].append(seconds)
            steps["each step's last writes, lease, progress (between steps)"].append(
                s["job_s"] - sum(s["steps_s"].values())
            )
            for part, seconds in s["exclusive_s"].items():
                parts[part].append(seconds)
        summary["where"][n] = {
            "steps": {k: median(v) for k, v in steps.items()},
            "parts": {k: median(v) for k, v in parts.items()},
            "background": {
                k: median([s["background_s"].get(k, 0.0) for s in samples])
                for k in sorted({k for s in samples for k in s["background_s"]})
            },
            "calls": {
                k: median([s["calls"].get(k, 0) for s in samples])
                for k in sorted({k for s in samples for k in s["calls"]})
            },
            "cpu": {k: median([s["cpu"][k] for s in samples]) for k in samples[0]["cpu"]},
            "assets": median(
                [
                    s["counters"]["images_total"]
                    + s["counters"]["crops_created"]
                    + s["counters"]["environments_created"]
                    for s in samples
                ]
            ),
        }
        # The repeat with the least interference, as a reading of what the code costs when the
        # machine is not shared (the medians include the others' load).
        quiet = min(samples, key=lambda s: s["cpu"]["others_share"] + s["raw_cpu"]["others_share"])
        summary["jobs"][n]["quietest"] = {
            "repeat": quiet["repeat"] + 1,
            "job_s": quiet["job_s"],
            "raw_model_s": quiet["raw_model_s"],
            "overhead": quiet["job_s"] / quiet["raw_model_s"],
            "others_share": quiet["cpu"]["others_share"],
            "raw_others_share": quiet["raw_cpu"]["others_share"],
        }
    if report["jobs_batch1"]:
        n = report["jobs_batch1"][0]["n"]
        usual = {s["repeat"]: s["job_s"] for s in report["jobs"] if s["n"] == n}
        pairs = [
            (s["job_s"], usual[s["repeat"]]) for s in report["jobs_batch1"] if s["repeat"] in usual
        ]
        calls = [s["calls"].get("Firestore: manifest commits", 0) for s in report["jobs_batch1"]]
        summary["job_batch1"] = {
            "n": n,
            "batch1_s": median([s["job_s"] for s in report["jobs_batch1"]]),
            "batch8_s": summary["jobs"].get(n, {}).get("job_s", {}).get("median", float("nan")),
            # Each BATCH = 1 job is paired with the usual job of the same repeat: the two ran
            # a few seconds apart, so they share most of the machine's passing load.
            "ratios": [one / eight for one, eight in pairs],
            "ratio": median([one / eight for one, eight in pairs]),
            "manifest_commits": median(calls),
            "manifest_commits_batch8": summary["where"]
            .get(n, {})
            .get("calls", {})
            .get("Firestore: manifest commits", float("nan")),
        }
    for section in ("batching", "naive"):
        repeats = report[section]
        if repeats:
            keys = repeats[0]["seconds"].keys()
            summary[section] = {k: median([r["seconds"][k] for r in repeats]) for k in keys}
            summary[f"{section}_others_share"] = median([r["cpu"]["others_share"] for r in repeats])
    if report["service"]:
        svc = report["service"]

        def mem(key: str, field: str) -> float:
            return median([s[key][field] for s in svc])

        summary["service"] = {
            "ready_s": spread([s["ready_s"] for s in svc]),
            "rss_at_ready_mib": mem("memory_at_ready", "rss_mib"),
            "pss_at_ready_mib": mem("memory_at_ready", "pss_mib"),
            "rss_after_job_mib": mem("memory_after_job", "rss_mib"),
            "pss_after_job_mib": mem("memory_after_job", "pss_mib"),
            "rss_after_second_job_mib": mem("memory_after_second_job", "rss_mib"),
            "peak_rss_mib": mem("memory_after_second_job", "peak_rss_mib"),
            "peak_rss_max_mib": max(s["memory_after_second_job"]["peak_rss_mib"] for s in svc),
            "processes": len(svc[-1]["memory_after_job"]["processes"]),
            "job_request_s": median([s["job_request_s"] for s in svc]),
            "second_job_request_s": median([s["second_job_request_s"] for s in svc]),
            "job_photos": svc[0]["job_photos"],
        }
    return summary


def _f(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:.{digits}f}"


JOB_HEADERS = [
    "N", "job s (min–max)", "img/s", "ms/img", "models alone s", "job ÷ models (min–max)",
    "detector s (imgs)", "faces s (imgs)", "models in job s", "describer s", "others' CPU",
]  # fmt: skip


def job_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for n, j in summary["jobs"].items():
        low, high = j["overhead_min_max"]
        rows.append(
            [
                str(n),
                f"{_f(j['job_s']['median'])} ({_f(j['job_s']['min'])}–{_f(j['job_s']['max'])})",
                _f(j["images_per_s"]),
                _f(j["ms_per_image"], 0),
                _f(j["raw_model_s"]),
                f"{_f(j['overhead'], 2)}× ({_f(low, 2)}–{_f(high, 2)})",
                f"{_f(j['raw_detector_s'])} ({j['detector_images']:.0f})",
                f"{_f(j['raw_faces_s'])} ({j['face_images']:.0f})",
                _f(j["model_in_job_s"]),
                _f(j["describer_s"]),
                f"{100 * j['others_share']:.0f}% (max {100 * j['others_share_max']:.0f}%)",
            ]
        )
    return rows


def where_rows(summary: dict[str, Any], n: int) -> tuple[list[list[str]], list[list[str]]]:
    where = summary["where"][n]
    job = summary["jobs"][n]["job_s"]["median"]
    steps = [[k, _f(v), f"{100 * v / job:.0f}%"] for k, v in where["steps"].items()]
    background = where["background"]
    parts = sorted({**dict.fromkeys(background, 0.0), **where["parts"]}.items(),
                   key=lambda kv: (-kv[1], -background.get(kv[0], 0.0)))  # fmt: skip
    part_rows = [
        [k, _f(v), f"{100 * v / job:.0f}%", _f(background.get(k)) if k in background else "",
         f"{where['calls'].get(k, 0):.0f}"]
        for k, v in parts
    ]  # fmt: skip
    return steps, part_rows


BEFORE: dict[str, Any] = {
    "what": "the engine of commit 64424f4 (an LRU of 64 decoded images; derived images encoded "
    "and stored one after another on the engine's thread; a guarded manifest write per batch "
    "of 8 or 50 assets), measured with this script on this machine on 2026-12-02 (medians of "
    "3 repeats, N = 128 one repeat only, with others using 67% of the cores). The report of "
    "commit 3c3f894, on a quieter machine, had 2.20×, 2.62× and 2.95× with the same I/O",
    "overhead": {8: 2.16, 32: 2.33, 128: 3.08},
    # assets with images, Storage reads, Storage writes, manifest document writes
    "io": {8: (37, 37, 60, 9), 32: (147, 298, 232, 28), 128: (586, 1346, 918, 102)},
}
"""The figures this benchmark measured before the engine's I/O was reworked."""
BEFORE_HEADERS = [
    "N", "job ÷ models before", "now", "Storage reads per asset before", "now",
    "Storage writes per asset before", "now", "manifest document writes before", "now",
]  # fmt: skip


def before_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for n, w in summary["where"].items():
        if n not in BEFORE["io"]:
            continue
        assets, reads, writes, commits = BEFORE["io"][n]
        calls = w["calls"]
        rows.append([
            str(n), f"{BEFORE['overhead'][n]:.2f}×", f"{summary['jobs'][n]['overhead']:.2f}×",
            f"{reads / assets:.2f}", f"{calls.get('Storage: get', 0) / w['assets']:.2f}",
            f"{writes / assets:.2f}", f"{calls.get('Storage: put', 0) / w['assets']:.2f}",
            str(commits), f"{calls.get('Firestore: manifest commits', 0):.0f}",
        ])  # fmt: skip
    return rows


PART_HEADERS = ["part (exclusive)", "s", "share", "s on Storage threads", "calls"]
IO_HEADERS = [
    "N", "assets with images", "Storage reads (per asset)", "Storage writes (per asset)",
    "manifest document writes", "job document calls",
]  # fmt: skip


def io_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for n, w in summary["where"].items():
        calls, assets = w["calls"], w["assets"]
        reads, writes = calls.get("Storage: get", 0), calls.get("Storage: put", 0)
        rows.append([
            str(n), f"{assets:.0f}", f"{reads:.0f} ({reads / assets:.2f})",
            f"{writes:.0f} ({writes / assets:.2f})",
            f"{calls.get('Firestore: manifest commits', 0):.0f}",
            f"{calls.get('Firestore: job progress', 0):.0f}",
        ])  # fmt: skip
    return rows


def per_photo_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    where, sizes = summary["where"], list(summary["where"])

    def row(label: str, value: Callable[[int], float], digits: int = 1) -> list[str]:
        return [label, *(_f(value(n), digits) for n in sizes)]

    def part_ms(part: str) -> Callable[[int], float]:
        return lambda n: 1000 * where[n]["parts"].get(part, 0.0) / n

    def call_ms(part: str) -> Callable[[int], float]:
        # On whichever thread it ran: the writes go on the engine's Storage threads.
        def seconds(n: int) -> float:
            return where[n]["parts"].get(part, 0.0) + where[n]["background"].get(part, 0.0)

        return lambda n: 1000 * seconds(n) / max(1, where[n]["calls"].get(part, 0))

    largest = where[sizes[-1]]["parts"]
    rows = [
        row("whole job", lambda n: summary["jobs"][n]["ms_per_image"], 0),
        *(row(part, part_ms(part)) for part in sorted(largest, key=lambda p: -largest[p])),
        *(row(f"{part}, ms per call", call_ms(part)) for part in ("Storage: put", "Storage: get")),
        row("Storage reads per asset",
            lambda n: where[n]["calls"].get("Storage: get", 0) / where[n]["assets"]),
    ]  # fmt: skip
    return ["ms per photo", *(f"N = {n}" for n in sizes)], rows


def batching_rows(summary: dict[str, Any], report: dict[str, Any]) -> list[list[str]]:
    rows = []
    b = summary.get("batching")
    if b:
        det = report["batching_inputs"]["detector_images"]
        faces = report["batching_inputs"]["face_images"]
        det_one = b["detector: one call per image"]
        faces_one = b["faces: one call per image"]
        for key, value in b.items():
            count, base = (det, det_one) if key.startswith("detector") else (faces, faces_one)
            rows.append([key, _f(1000 * value / count, 1), f"{base / value:.2f}×"])
    n = summary.get("naive")
    if n:
        for model in ("detector", "faces"):
            once = n[f"{model}: loaded once"]
            fresh = n[f"{model}: built and loaded per image"]
            load = n[f"{model}: build + load alone"]
            rows += [
                [f"{model}: loaded once, one call per image", _f(1000 * once, 1), "1.00×"],
                [f"{model}: built and loaded anew per image", _f(1000 * fresh, 1),
                 f"{once / fresh:.2f}× (reuse: {fresh / once:.1f}× faster)"],
                [f"{model}: of which build + load()", _f(1000 * load, 1), ""],
            ]  # fmt: skip
    return rows


def service_rows(summary: dict[str, Any], report: dict[str, Any]) -> list[list[str]]:
    s = summary.get("service")
    rows = []
    if s:
        r = s["ready_s"]
        k = s["job_photos"]
        rows += [
            ["cold start: spawn to GET /readyz 200 (s)",
             f"{_f(r['median'], 1)} (min {_f(r['min'], 1)}, max {_f(r['max'], 1)}, n = {r['count']})"],
            ["RSS when ready, summed over its processes (MiB)", _f(s["rss_at_ready_mib"], 0)],
            ["PSS when ready (MiB)", _f(s["pss_at_ready_mib"], 0)],
            [f"RSS after one {k}-photo job (MiB)", _f(s["rss_after_job_mib"], 0)],
            [f"PSS after one {k}-photo job (MiB)", _f(s["pss_after_job_mib"], 0)],
            [f"RSS after a second {k}-photo job (MiB)", _f(s["rss_after_second_job_mib"], 0)],
            ["peak RSS: per-process peaks summed (MiB; median, max)",
             f"{_f(s['peak_rss_mib'], 0)}, {_f(s['peak_rss_max_mib'], 0)}"],
            ["processes in the service's tree", str(s["processes"])],
            [f"first {k}-photo job through POST /tasks/run_job (s)",
             f"{_f(s['job_request_s'])} ({k / s['job_request_s']:.2f} img/s)"],
            [f"second {k}-photo job (s)",
             f"{_f(s['second_job_request_s'])} ({k / s['second_job_request_s']:.2f} img/s)"],
        ]  # fmt: skip
    alone = report.get("models_alone")
    if alone:
        rows += [
            ["models alone, bare interpreter: import + build and load (s)",
             f"{_f(alone['import_s'], 1)} + {_f(alone['load_s'], 1)}"],
            ["models alone, after one call on the 4 sample photos: RSS, peak (MiB)",
             f"{_f(alone['rss_mib'], 0)}, {_f(alone['peak_rss_mib'], 0)}"],
        ]  # fmt: skip
    return rows


def markdown(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["summary"]
    out = [
        "# Manifesting: jobs against the models alone, batching, the model service",
        "",
        f"`benchmarks/manifesting.py`, {report['mode']} mode, {m['date_utc']} UTC, commit "
        f"{m['commit']}{' (tracked files changed)' if m['working_tree_changed'] else ''}; "
        f"whole run {report['wall_s']:.0f} s.",
        "",
        f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, {m['os']}, "
        f"Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items())
        + f"; onnxruntime threads per session: {m['onnx_threads']}. Load average "
        f"{m['loadavg_start'][0]:.1f} at the start and {m['loadavg_end'][0]:.1f} at the end: "
        "the machine is shared, so read the min–max and the others' CPU column.",
        "",
        "Models: " + ", ".join(f"{k} `{v}`" for k, v in report.get("models", {}).items()) + ". "
        f"Photos: {', '.join(report['photo_sources'])}, cycled, every copy cut, rescaled and "
        f"brightened a little (no two alike). Medians of {report['profile']['repeats']} repeats.",
        "",
        "## Jobs beside the models alone",
        "",
        markdown_table(JOB_HEADERS, job_rows(s)),
        "",
        "- **job s**: `ManifestingEngine.run`, from taking the lease to READY, in this process "
        "against the emulators; the uploads are made before and not counted.",
        "- **models alone**: right after each job, `detector.detect` on the decoded uploads "
        "and `faces.analyze` on every image the faces step analysed (character uploads and "
        "person crops), the same decoded images in the job's batches, no Firestore or "
        "Storage. **job ÷ models** is the job's overhead over pure inference (median of the "
        "per-repeat ratios). **models in job**: the same two calls timed inside the job. The "
        "local describer is not a model and is not in the models' time; its time in the job "
        "is given.",
        "- **others' CPU**: the share of both cores that other processes on the machine used "
        "during the job (not the emulators, which count as the job's).",
        "",
        "Quietest repeat of each size (others' CPU during the job / during the models alone): "
        + "; ".join(
            f"N = {n}: {_f(j['quietest']['job_s'])} s, {n / j['quietest']['job_s']:.2f} img/s, "
            f"models alone {_f(j['quietest']['raw_model_s'])} s, "
            f"{j['quietest']['overhead']:.2f}× ({100 * j['quietest']['others_share']:.0f}% / "
            f"{100 * j['quietest']['raw_others_share']:.0f}%)"
            for n, j in s["jobs"].items()
        )
        + ".",
        "",
    ]
    if s["where"]:
        out += [
            "## Before and after",
            "",
            f"Before: {BEFORE['what']}.",
            "",
            markdown_table(BEFORE_HEADERS, before_rows(s)),
            "",
        ]
        n = max(s["where"])
        steps, parts = where_rows(s, n)
        cpu = s["where"][n]["cpu"]
        out += [
            f"## Where a job's time goes (N = {n}, medians)",
            "",
            markdown_table(["step (inclusive)", "s", "share"], steps),
            "",
            markdown_table(PART_HEADERS, parts),
            "",
            "![Where the job's time goes, part by part](manifesting_parts.png)",
            "",
            "Parts are exclusive wall time on the engine's thread, from wrappers around what "
            "the engine is given (repositories, blob store, models) and the helpers it calls "
            "by name (decoding, crops, encoders, contact sheet, grouping, describer); a "
            "Firestore call includes validating what it read. CPU seconds during the job: "
            f"this process {cpu['own_cpu_s']:.1f}, Firestore emulator "
            f"{cpu['firestore cpu_s']:.1f}, Storage emulator {cpu['storage cpu_s']:.1f}.",
            "",
        ]
        out += [
            "The job's I/O (assets with images: the uploads and what was extracted; Storage "
            "calls from every thread; a manifest document write is a guarded write, with its "
            "revision claim):",
            "",
            markdown_table(IO_HEADERS, io_rows(s)),
            "",
        ]
        headers, rows = per_photo_rows(s)
        out += [
            "Every part in milliseconds per photo, by job size (medians; a part that grows "
            "with N costs more than linearly):",
            "",
            markdown_table(headers, rows),
            "",
            "Storage writes grow with N for a reason outside the engine: the Storage emulator "
            "(gcp-storage-emulator) rewrites its JSON index of every object on each write, so "
            "a write costs more the more objects exist (Cloud Storage does not), and it serves "
            "one request at a time. The engine's Storage threads hide the writes' wait, not "
            "the emulator's CPU, which it takes from the models on a machine of few cores.",
            "",
        ]
    rows = batching_rows(s, report)
    if rows:
        bi = report["batching_inputs"]
        out += [
            "## Batching and session reuse",
            "",
            f"The loaded models on the inputs of the first N = {bi['from_job_n']} job: "
            f"{bi['detector_images']} uploads for the detector, the first {bi['face_images']} "
            "images of its faces step. Gain: one call per image ÷ this way (above 1: faster). "
            f"Others' CPU meanwhile: {100 * s.get('batching_others_share', 0):.0f}% (batching), "
            f"{100 * s.get('naive_others_share', 0):.0f}% (built anew).",
            "",
            markdown_table(["how", "ms per image", "gain"], rows),
            "",
            "The detector runs one image per forward pass by default, so calls of 8 differ from "
            "single calls only by call overhead; the forward batch of 8 is a separate detector "
            "built with `batch_size=8`. The faces analyser detects each image on its own "
            "(YuNet at the image's size) and embeds all faces of a call in SFace batches. "
            "The 1-thread row is the same analyser with one onnxruntime intra-op thread per "
            "session (FRAMEFORK_MODELS__ONNX_THREADS=1) instead of one per core; which is "
            "faster depends on how busy the cores are (the others' CPU above): threads that "
            "share a core with other processes wait for each other. OpenCV sets "
            "the detector's network up on its first forward pass, so its build + load() is "
            "cheap and the first call pays the rest.",
            "",
        ]
    if "job_batch1" in s:
        b = s["job_batch1"]
        out += [
            f"Whole job on {b['n']} photos with the engine's BATCH set to 1 (one image per model "
            f"call; the guarded writes do not follow batches): {_f(b['batch1_s'])} s against {_f(b['batch8_s'])} s "
            f"with 8 (medians); paired with the usual job of the same repeat "
            f"{', '.join(f'{r:.2f}×' for r in b['ratios'])}, median {b['ratio']:.2f}×. Manifest "
            f"document writes: {b['manifest_commits']:.0f} against "
            f"{b['manifest_commits_batch8']:.0f}.",
            "",
        ]
    rows = service_rows(s, report)
    if rows:
        out += [
            "## The model service",
            "",
            markdown_table(["", ""], rows),
            "",
            "`bentoml serve model_service.service:ModelService` with the emulators' "
            "environment, timed from spawn to the first 200 of `GET /readyz`. Memory from /proc "
            "over its process tree: RSS counts shared pages once per process, PSS splits them; "
            "per-process peaks (VmHWM) need not coincide, so their sum bounds the peak from "
            "above. The jobs go through POST /tasks/run_job, as Cloud Tasks sends them.",
            "",
        ]
    notes = (
        [f"noisy: {x}" for x in s["noisy"]]
        + [f"skipped {x}" for x in report["skipped"]]
        + [f"problem: {x}" for x in report["problems"]]
    )
    if notes:
        out += ["## Noisy samples, skipped work, problems", ""] + [f"- {x}" for x in notes] + [""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "N = 8 only, one cold start", argv)
    if not (OFFLINE_MODELS / "yolov3-tiny.weights").is_file() or not PHOTOS.is_dir():
        print("offline models or sample photos missing: run scripts/bootstrap", file=sys.stderr)
        return 2
    report = run(QUICK if args.quick else FULL, args.quick)
    s = report["summary"]
    print()
    print(text_table(JOB_HEADERS, job_rows(s)))
    if s["where"]:
        steps, parts = where_rows(s, max(s["where"]))
        print()
        print(text_table(["step (inclusive)", "s", "share"], steps))
        print()
        print(text_table(PART_HEADERS, parts))
        print()
        print(text_table(IO_HEADERS, io_rows(s)))
    rows = batching_rows(s, report)
    if rows:
        print()
        print(text_table(["batching and reuse", "ms per image", "gain"], rows))
    if "job_batch1" in s:
        b = s["job_batch1"]
        print(
            f"\njob on {b['n']} photos, BATCH 1 against 8: {b['batch1_s']:.2f} s against "
            f"{b['batch8_s']:.2f} s; paired per repeat {b['ratio']:.2f}× (median)"
        )
    rows = service_rows(s, report)
    if rows:
        print()
        print(text_table(["model service", ""], rows))
    for line in s["noisy"]:
        print(f"noisy: {line}")
    for line in report["skipped"]:
        print(f"skipped {line}")
    for line in report["problems"]:
        print(f"PROBLEM {line}")
    print(f"\nwhole run {report['wall_s']:.0f} s")
    write_atomically(args.out / "manifesting.md", markdown(report))
    write_json(args.out / "manifesting.json", report, digits=6)
    written = [args.out / "manifesting.md", args.out / "manifesting.json"]
    if s["where"]:
        n = max(s["where"])
        by_part = sorted(s["where"][n]["parts"].items(), key=lambda kv: -float(kv[1]))
        title = f"Where a job on {n} photos spends its time (exclusive wall time, medians)"
        write_atomically(args.out / "manifesting_parts.png", bar_chart(title, by_part, "s"))
        written.append(args.out / "manifesting_parts.png")
    print(f"reports: {', '.join(map(str, written))}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
