"""Wall time and Firestore reads and writes per pipeline stage, against the same media work done
without the pipeline, for projects of 3, 10 and 30 scenes with the local provider.

    .venv/bin/python benchmarks/pipeline.py            # full run: 2 to 4 minutes (8 at most)
    .venv/bin/python benchmarks/pipeline.py --quick    # smoke run: 3 scenes once, under a minute

Starts its own emulators (Firestore, Storage, Cloud Tasks) under .local/bench-pipeline and runs
the stages in this process, as the run_stage function would: `services().pipeline.run(task)`
for each stage task, which a recording dispatcher keeps instead of sending it to Cloud Tasks.
Each project uses a READY manifest of four assets with photos (two characters, a prop, a
place), so keyframes are composed from reference crops read from Storage, as in the product.

Per stage it records wall time; Firestore documents read and written (counted by wrapping the
google-cloud-firestore client in this process: `DocumentReference.get`, `Query.stream` (which
`Query.get` and `CollectionReference.stream/get` go through), `Client.get_all` and
`WriteBatch.commit`, which every document create/set/update/delete goes through), cross-checked
against the RPCs the client sent; Storage gets and puts; and how the wall time splits into
model work (the providers), Firestore, Storage and the rest (orchestration: validation, copies,
hashing, event loops).

The baseline, measured in the same run right beside each project, is the same media work
without the pipeline: the local storyboard model and scene placement, then the same keyframes
(same prompts, seeds and reference images, held in memory), the same clips and the same stitch,
calling the local providers directly. Its output is checked to be byte-identical to what the
pipeline stored, so pipeline ÷ baseline is the pipeline's overhead: Firestore, Storage and
orchestration.

Prints a table and writes benchmarks/reports/pipeline.md and pipeline.json (`--out DIR`
elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import hashlib
import io
import json
import math
import os
import platform
import random
import resource
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python puts benchmarks/ on the path, not the repository root.
sys.path.insert(0, str(ROOT))
# Before any Google client is imported: credential lookup must never probe a metadata server.
os.environ["NO_GCE_CHECK"] = "true"

from common import FOREIGN_STACK_ENV, command_output, json_safe, package_version, write_atomically  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from infra.local.stack import LocalStack  # noqa: E402

REPORTS = ROOT / "benchmarks" / "reports"
STATE_DIR = ROOT / ".local" / "bench-pipeline"
CORES = len(os.sched_getaffinity(0))
STAGES = ("storyboard", "keyframes", "clips", "stitch")
CLIP_SECONDS = 2
LONG_SIDE = 640
"""Keyframes (and so clips) of 640×360: a quarter of the pixels of the local model's default
1280×720, which keeps a 30-scene run within the time limit on two cores while every stage still
does its real work (PNG encoding, H.264 encoding, stream-copy stitching)."""
OWNER = "bench-pipeline"
PROMPT = "a lighthouse keeper finds a message in a bottle and sets out to answer it"
FULL_BUDGET_S = 420.0
"""Measurements stop being started past this (the stack and the warm-up come on top): the whole
run stays under 8 minutes even when neighbours slow the machine down."""


@dataclass(frozen=True)
class Profile:
    sizes: tuple[int, ...]
    repeats: int
    warmup: bool


FULL = Profile(sizes=(3, 10, 30), repeats=3, warmup=True)
QUICK = Profile(sizes=(3,), repeats=1, warmup=True)


# ---------------------------------------------------------------------------------------------
# Counting: Firestore, Storage, providers, per phase


@dataclass
class Tally:
    """What one phase (a stage of one project, the generate call, a baseline stage) did."""

    reads: int = 0
    """Documents read as Firestore bills them: each document a query returns (a query that
    returns none costs one), each document a lookup asks for, found or not."""
    writes: int = 0
    """Document writes (create, set, update, delete), each write of a batch counted."""
    lookups: int = 0
    """DocumentReference.get calls."""
    get_alls: int = 0
    queries: int = 0
    commits: int = 0
    write_bytes: int = 0
    """Serialized size of the writes: a checkpoint holds every scene, so its size grows."""
    largest_write: int = 0
    firestore_s: float = 0.0
    storage_gets: int = 0
    storage_puts: int = 0
    storage_get_bytes: int = 0
    storage_put_bytes: int = 0
    storage_s: float = 0.0
    provider_s: float = 0.0
    rpcs: Counter[str] = field(default_factory=Counter)
    """RPCs the Firestore client sent, by method: the cross-check of the counts above."""
    paths: Counter[str] = field(default_factory=Counter)
    """'read projects/*/scenes/*' → documents: where the reads and writes go."""

    @property
    def firestore_calls(self) -> int:
        return self.lookups + self.get_alls + self.queries + self.commits


class Meter:
    """Attributes every counted operation to the phase under way (one at a time: the pipeline
    runs its stages on this thread; providers' worker threads never touch Firestore)."""

    def __init__(self) -> None:
        self.current = Tally()

    @contextlib.contextmanager
    def phase(self) -> Iterator[Tally]:
        previous, self.current = self.current, Tally()
        try:
            yield self.current
        finally:
            self.current = previous


METER = Meter()


def _pattern(path: str) -> str:
    """projects/abc/scenes/001 → projects/*/scenes/*: collections named, ids folded."""
    parts = path.split("/documents/", 1)[-1].split("/")
    return "/".join(p if i % 2 == 0 else "*" for i, p in enumerate(parts))


def install_firestore_counters() -> None:
    """Wraps the client's read and write entry points in this process; product code unchanged."""
    from google.cloud.firestore_v1 import batch, client, document, query
    from google.cloud.firestore_v1.services.firestore import client as gapic

    def timed(tally: Tally, started: float) -> None:
        tally.firestore_s += time.perf_counter() - started

    original_get = document.DocumentReference.get

    def get(self: Any, *args: Any, **kwargs: Any) -> Any:
        tally, started = METER.current, time.perf_counter()
        try:
            return original_get(self, *args, **kwargs)
        finally:
            timed(tally, started)
            tally.lookups += 1
            tally.reads += 1  # a missing document is billed as a read too
            tally.paths[f"read {_pattern(self.path)}"] += 1

    original_stream = query.Query.stream

    def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        tally, started = METER.current, time.perf_counter()
        result = original_stream(self, *args, **kwargs)
        timed(tally, started)
        tally.queries += 1
        inner = result._generator  # StreamGenerator keeps its explain-metrics plumbing

        def counting() -> Generator[Any, None, Any]:
            returned = 0
            while True:
                started = time.perf_counter()
                try:
                    snapshot = next(inner)
                except StopIteration as stop:
                    timed(tally, started)
                    tally.reads += max(returned, 1)  # an empty answer is billed one read
                    if returned == 0:
                        where = "/".join(getattr(self._parent, "_path", ("?",)))
                        tally.paths[f"read (empty query) {_pattern(where)}"] += 1
                    return stop.value
                timed(tally, started)
                returned += 1
                tally.paths[f"read {_pattern(snapshot.reference.path)}"] += 1
                yield snapshot

        result._generator = counting()
        return result

    original_get_all = client.Client.get_all

    def get_all(self: Any, references: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        tally = METER.current
        tally.get_alls += 1
        inner = original_get_all(self, references, *args, **kwargs)
        while True:
            started = time.perf_counter()
            try:
                snapshot = next(inner)
            except StopIteration:
                timed(tally, started)
                return
            timed(tally, started)
            tally.reads += 1
            tally.paths[f"read {_pattern(snapshot.reference.path)}"] += 1
            yield snapshot

    original_commit = batch.WriteBatch.commit

    def commit(self: Any, *args: Any, **kwargs: Any) -> Any:
        tally, started = METER.current, time.perf_counter()
        writes = list(self._write_pbs)
        try:
            return original_commit(self, *args, **kwargs)
        finally:
            timed(tally, started)
            tally.commits += 1
            tally.writes += len(writes)
            for pb in writes:
                raw = type(pb).pb(pb)
                size = raw.ByteSize()
                tally.write_bytes += size
                tally.largest_write = max(tally.largest_write, size)
                name = raw.update.name or raw.delete or raw.transform.document
                tally.paths[f"write {_pattern(name)}"] += 1

    setattr(document.DocumentReference, "get", get)  # noqa: B010
    setattr(query.Query, "stream", stream)  # noqa: B010
    setattr(client.Client, "get_all", get_all)  # noqa: B010
    setattr(batch.WriteBatch, "commit", commit)  # noqa: B010

    # The RPCs themselves, counted only: a path into Firestore the wrappers above missed
    # (a transaction, an aggregation, a listener) shows up as a mismatch in the report.
    for name in (
        "commit", "batch_get_documents", "run_query", "run_aggregation_query", "batch_write",
        "begin_transaction", "rollback", "list_documents", "get_document", "update_document",
        "delete_document", "create_document", "write", "listen", "partition_query",
        "list_collection_ids",
    ):  # fmt: skip
        method = getattr(gapic.FirestoreClient, name, None)
        if method is None:
            continue

        def counted(
            self: Any, *args: Any, _method: Any = method, _name: str = name, **kw: Any
        ) -> Any:
            METER.current.rpcs[_name] += 1
            return _method(self, *args, **kw)

        setattr(gapic.FirestoreClient, name, counted)


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
    """A provider whose calls add their time to the phase under way: the model work."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = inner.name if hasattr(inner, "name") else type(inner).__name__

    async def storyboard(self, request: Any) -> Any:
        return await self._timed_async(self._inner.storyboard(request))

    async def keyframe(self, request: Any) -> Any:
        return await self._timed_async(self._inner.keyframe(request))

    async def start_clip(self, request: Any) -> Any:
        return await self._timed_async(self._inner.start_clip(request))

    async def poll_clip(self, operation: Any) -> Any:
        return await self._timed_async(self._inner.poll_clip(operation))

    def stitch(self, clips: list[bytes]) -> bytes:
        tally, started = METER.current, time.perf_counter()
        try:
            data: bytes = self._inner.stitch(clips)
            return data
        finally:
            tally.provider_s += time.perf_counter() - started

    async def _timed_async(self, call: Any) -> Any:
        tally, started = METER.current, time.perf_counter()
        try:
            return await call
        finally:
            tally.provider_s += time.perf_counter() - started


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
# CPU


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces


def group_cpu_seconds(pgid: int) -> float:
    ticks = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and int(fields[2]) == pgid:
                ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """This process and its reaped children: ffmpeg runs as a child and is always waited for."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


class Clock:
    """Wall time, CPU of this process (with ffmpeg), of the Firestore and Storage emulators,
    and the share of the machine everything else used meanwhile (others on a shared host)."""

    def __init__(self, stack: LocalStack) -> None:
        self.groups = {n: stack.processes[n].pid for n in ("firestore", "storage")}

    def read(self) -> dict[str, float]:
        busy, total = machine_ticks()
        reading = {f"cpu_{n}": group_cpu_seconds(pgid) for n, pgid in self.groups.items()}
        reading.update(wall=time.perf_counter(), cpu_self=own_cpu_seconds(), busy=busy, total=total)
        return reading

    @staticmethod
    def between(start: dict[str, float], end: dict[str, float]) -> dict[str, float]:
        wall = end["wall"] - start["wall"]
        ours = sum(end[k] - start[k] for k in start if k.startswith("cpu_"))
        ticks = max(1.0, end["total"] - start["total"])
        busy_s = (end["busy"] - start["busy"]) / ticks * wall * CORES
        return {
            "wall_s": wall,
            "cpu_self_s": end["cpu_self"] - start["cpu_self"],
            "cpu_firestore_s": end["cpu_firestore"] - start["cpu_firestore"],
            "cpu_storage_s": end["cpu_storage"] - start["cpu_storage"],
            # Ticks are coarse (10 ms): short phases can come out slightly negative.
            "others_share": max(0.0, busy_s - ours) / max(wall * CORES, 1e-9),
        }


# ---------------------------------------------------------------------------------------------
# One project through the pipeline, and the same media work without it


class Tasks:
    """Stands in for Cloud Tasks: keeps what is enqueued; the benchmark delivers it in order."""

    def __init__(self) -> None:
        self.queued: list[Any] = []

    def enqueue(
        self, queue: str, url: str, payload: Any, *, task_id: str, delay_s: float = 0
    ) -> None:
        self.queued.append(payload)


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
    from shared.models.assets import AssetCreate
    from shared.models.manifests import ManifestCreate

    identity = Identity(OWNER)
    manifest = services.registry.create_manifest(identity, ManifestCreate(name="Lighthouse cast"))
    for number, (asset_type, name, size) in enumerate(CAST):
        asset = services.registry.create_asset(
            identity, manifest.id, AssetCreate(asset_type=asset_type, name=name)
        )
        data = photo(seed * 10 + number, size)
        outcome = services.uploads.direct_upload(
            identity, manifest.id, asset.id, data, "image/jpeg"
        )
        if outcome.status != "attached":
            raise RuntimeError(f"upload of {name}: {outcome.status} ({outcome.detail})")
    firestore_client().collection("manifests").document(manifest.id).update({"status": "READY"})
    from shared.repositories.manifests import ManifestRepository

    assets = ManifestRepository(firestore_client()).list_assets(manifest.id)
    bucket = services.settings.storage.media_bucket
    images: dict[str, tuple[bytes, str]] = {}
    for asset in assets:
        if asset.image is not None:
            data = services.blobs.get(bucket, asset.image.object_name, max_bytes=2**26)
            images[asset.id] = (data, asset.image.content_type)
    return Manifest(manifest.id, assets, images)


def generate_request(scenes: int, manifest_id: str) -> Any:
    from shared.models.projects import GenerateRequest

    return GenerateRequest(
        prompt=PROMPT,
        clip_seconds=CLIP_SECONDS,
        total_seconds=CLIP_SECONDS * scenes,
        manifest_id=manifest_id,
    )


@dataclass
class Phase:
    name: str
    measures: dict[str, float]
    tally: Tally

    def row(self) -> dict[str, Any]:
        t = self.tally
        return {
            "name": self.name,
            **self.measures,
            "reads": t.reads,
            "writes": t.writes,
            "firestore_calls": t.firestore_calls,
            "lookups": t.lookups,
            "get_alls": t.get_alls,
            "queries": t.queries,
            "commits": t.commits,
            "write_bytes": t.write_bytes,
            "largest_write": t.largest_write,
            "firestore_s": t.firestore_s,
            "storage_gets": t.storage_gets,
            "storage_puts": t.storage_puts,
            "storage_get_bytes": t.storage_get_bytes,
            "storage_put_bytes": t.storage_put_bytes,
            "storage_s": t.storage_s,
            "provider_s": t.provider_s,
            "rest_s": self.measures["wall_s"] - t.firestore_s - t.storage_s - t.provider_s,
            "rpcs": dict(t.rpcs),
            "paths": dict(sorted(t.paths.items())),
        }


@contextlib.contextmanager
def measured(clock: Clock, name: str, into: list[Phase]) -> Iterator[Tally]:
    gc.collect()  # a collection left over from setup must not land in the phase measured
    with METER.phase() as tally:
        start = clock.read()
        yield tally
        end = clock.read()
    into.append(Phase(name, Clock.between(start, end), tally))


def run_pipeline(services: Any, clock: Clock, scenes: int, manifest: Manifest) -> dict[str, Any]:
    from shared.auth import Identity
    from shared.models.projects import ProjectStatus
    from shared.pipeline.runner import StageOutcome

    tasks = Tasks()
    runner = services.pipeline
    runner._dispatcher = lambda: tasks
    phases: list[Phase] = []
    with measured(clock, "generate", phases):
        project = services.projects.generate(Identity(OWNER), generate_request(scenes, manifest.id))
    outcomes = []
    while tasks.queued:
        task = tasks.queued.pop(0)
        with measured(clock, task.stage.value, phases):
            outcomes.append(runner.run(task))
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
    media = {
        "keyframes": [
            _digest_of(s.start_frame_object) + "/" + _digest_of(s.end_frame_object)
            for s in stored_scenes
        ],
        "clips": [_digest_of(s.clip_object) for s in stored_scenes],
        "stitch": _digest_of(stored.final_video_object if stored else None),
    }
    return {
        "phases": phases,
        "problems": problems,
        "media": media,
        "scenes": stored_scenes,
        "checkpoint_bytes": max(len(json.dumps(c.model_dump(mode="json"))) for c in checkpoints)
        if checkpoints
        else 0,
    }


def _digest_of(object_name: str | None) -> str:
    """Stored media are named pipeline/<sha256>.<ext>: the name says the content."""
    return (object_name or "").rsplit("/", 1)[-1].split(".", 1)[0]


def run_baseline(clock: Clock, scenes: int, manifest: Manifest) -> dict[str, Any]:
    """The same media work, the providers called directly, nothing stored anywhere."""
    from shared.pipeline.ports import (
        AssetBrief,
        ClipRequest,
        KeyframeRequest,
        ReferenceImage,
        StoryboardRequest,
    )
    from shared.pipeline.storyboard import place_scene

    request = generate_request(scenes, manifest.id)
    providers = local_providers()
    phases: list[Phase] = []
    assets = [a for a in manifest.assets if a.image is not None or a.reverse_prompt]
    aspect = request.aspect_ratio
    with measured(clock, "storyboard", phases):
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
    frames: list[tuple[bytes, bytes]] = []
    with measured(clock, "keyframes", phases):
        for index, scene in enumerate(placed):
            references = [
                ReferenceImage(by_id[i].manifest_tag, *manifest.images[i])
                for i in scene.reference_asset_ids
                if i in manifest.images
            ]
            start = asyncio.run(
                providers.image.keyframe(
                    KeyframeRequest(scene.keyframe_prompt, aspect, references, seed=index)
                )
            )
            end = asyncio.run(
                providers.image.keyframe(
                    KeyframeRequest(
                        scene.end_keyframe_prompt, aspect, references, seed=1000 + index
                    )
                )
            )
            frames.append((start.data, end.data))
    clips: list[bytes] = []
    with measured(clock, "clips", phases):
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
                    )
                )
            )
            if operation.video is None:
                raise RuntimeError(f"baseline clip failed: {operation.error}")
            clips.append(operation.video)
    with measured(clock, "stitch", phases):
        final = providers.stitcher.stitch(clips)

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


def start_stack() -> LocalStack:
    for key in FOREIGN_STACK_ENV:
        os.environ.pop(key, None)
    stack = LocalStack(STATE_DIR, die_with_parent=True)  # a killed run leaves no emulators
    stack.start(functions=False)
    os.environ.update(stack.env)
    from functions.services import services
    from shared.clients import reset_clients
    from shared.settings import get_settings

    get_settings.cache_clear()
    reset_clients()
    services.cache_clear()
    return stack


def build_services() -> Any:
    from functions.services import services

    built = services()
    built.pipeline._blobs = CountingBlobs(built.pipeline._blobs)
    built.pipeline._providers = lambda project: local_providers()
    return built


def one_size(
    stack: LocalStack, services: Any, clock: Clock, scenes: int, repeat: int, baseline_first: bool
) -> dict[str, Any]:
    stack.reset()  # every project starts from empty emulators: the same collection sizes
    with METER.phase():  # setup is neither a stage nor the baseline
        manifest = ready_manifest(services, seed=repeat)
    order = ("baseline", "pipeline") if baseline_first else ("pipeline", "baseline")
    results: dict[str, Any] = {}
    for which in order:
        if which == "pipeline":
            results["pipeline"] = run_pipeline(services, clock, scenes, manifest)
        else:
            results["baseline"] = run_baseline(clock, scenes, manifest)
    pipeline, baseline = results["pipeline"], results["baseline"]
    problems = list(pipeline["problems"])
    for kind in ("keyframes", "clips", "stitch"):
        if pipeline["media"][kind] != baseline["media"][kind]:
            problems.append(f"{kind}: baseline output differs from the pipeline's")
    for phase in baseline["phases"]:
        if phase.tally.firestore_calls or phase.tally.rpcs:
            problems.append(f"baseline {phase.name} touched Firestore")
    for phase in pipeline["phases"]:
        t = phase.tally
        rpc = t.rpcs
        expected = {
            "commit": t.commits,
            "batch_get_documents": t.lookups + t.get_alls,
            "run_query": t.queries,
        }
        seen = {k: rpc.get(k, 0) for k in expected}
        other = {k: v for k, v in rpc.items() if k not in expected}
        if seen != expected or other:
            problems.append(f"{phase.name}: RPCs {dict(rpc)} vs counted {expected}")
    return {
        "scenes": scenes,
        "repeat": repeat,
        "baseline_first": baseline_first,
        "pipeline": [p.row() for p in pipeline["phases"]],
        "baseline": [p.row() for p in baseline["phases"]],
        "checkpoint_json_bytes": pipeline["checkpoint_bytes"],
        "frame_size": baseline["frame_size"],
        "problems": problems,
    }


def machine(started: float) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gib = math.nan
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_gib = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024

    version, command = package_version, command_output

    from shared.pipeline.local_ffmpeg import ffmpeg_exe

    ffmpeg = command(ffmpeg_exe(), "-hide_banner", "-version").split(" Copyright", 1)[0]
    return {
        "date_utc": dt.datetime.fromtimestamp(started, dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "cores": CORES,
        "cpu_model": model,
        "memory_gib": round(memory_gib, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "node": command("node", "--version"),
        "ffmpeg": ffmpeg,
        "commit": command("git", "rev-parse", "--short", "HEAD"),
        "working_tree_changed": bool(
            command("git", "status", "--porcelain", "--untracked-files=no")
        ),
        "packages": {
            p: version(p)
            for p in (
                "google-cloud-firestore",
                "google-cloud-storage",
                "pillow",
                "numpy",
                "imageio-ffmpeg",
            )
        },
        "loadavg_start": os.getloadavg(),
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


def _phase(phases: list[dict[str, Any]], name: str) -> dict[str, Any]:
    if name != "total":
        return next(p for p in phases if p["name"] == name)
    # The run as a user waits for it: every stage, and generate where the pipeline has it.
    summed = {m: sum(p[m] for p in phases) for m in MEASURES if m != "largest_write"}
    summed["largest_write"] = max(p["largest_write"] for p in phases)
    wall = summed["wall_s"]
    summed["others_share"] = sum(p["others_share"] * p["wall_s"] for p in phases) / max(wall, 1e-9)
    return summed


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

    def read_count(prefix: str, phase: str | None = None) -> int:
        return sum(
            count
            for p in run["pipeline"]
            if phase is None or p["name"] == phase
            for key, count in p["paths"].items()
            if key.startswith("read " + prefix)
        )

    reads = read_count("")
    in_keyframes = read_count("manifest_snapshots", "keyframes")
    scenes = read_count("projects/*/scenes")
    keyframes = grown["keyframes"]["reads"]
    fixed = round(keyframes["fixed"])
    others = round(keyframes["per_scene"]) - round(in_keyframes / large)
    lines.append(
        f"**What the reads are** (N = {large}): {scenes} of {reads} ({scenes / reads:.0%}) read "
        "the scenes back (each stage lists them when it starts and again for its checkpoint), "
        f"and {in_keyframes} ({in_keyframes / reads:.0%}) are the keyframes stage reading the "
        f"manifest snapshot again for every scene ({in_keyframes / large:.0f} per scene: the "
        "snapshot document and each of its assets). With A assets in the snapshot (here "
        f"{len(CAST)}) the keyframes stage reads {fixed} + N·({others} + 1 + A) documents, so a "
        "manifest that processing filled with extracted crops multiplies its reads by the "
        "scene count."
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
        f"2 × N, 16:9, the local provider (storyboard, keyframes at {frame[0]}×{frame[1]} "
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
        "- **pipeline s**: `PipelineRunner.run(task)` for that stage's task; **generate** is "
        "`ProjectService.generate` (manifest snapshot, project document, first task).",
        "- **baseline s**: the same media work without the pipeline, measured beside it: the "
        "local providers called directly with the same prompts, seeds and reference images (in "
        "memory), nothing stored. Its keyframes, clips and final video are checked "
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
            "byte-identical to the pipeline's; the baseline touched no Firestore; the client's "
            "RPCs matched the counted calls in every phase."
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
    write_atomically(out / "pipeline.json", json.dumps(json_safe(report), indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="3 scenes once: a smoke run")
    parser.add_argument("--out", type=Path, default=REPORTS, help="where the reports go")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    started = time.time()
    began = time.perf_counter()

    # SIGTERM (a CI timeout, `kill`) must stop the emulators too: unwind through `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stack = start_stack()
    try:
        install_firestore_counters()
        services = build_services()
        clock = Clock(stack)
        info = machine(started)
        print(f"pipeline benchmark: {'quick' if args.quick else 'full'} run, stack up in "
              f"{time.perf_counter() - began:.1f} s", flush=True)  # fmt: skip
        if profile.warmup:
            # Imports, fonts, the ffmpeg binary, gRPC channels: paid once, before any figure.
            one_size(stack, services, clock, 3, repeat=99, baseline_first=False)
            print(f"  warm-up done at {time.perf_counter() - began:.0f} s", flush=True)
        runs: list[dict[str, Any]] = []
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
                    stack, services, clock, scenes, repeat, baseline_first=repeat % 2 == 1
                )
                last_s[scenes] = time.perf_counter() - t0
                runs.append(run)
                total = _phase(run["pipeline"], "total")
                base = _phase(run["baseline"], "total")
                print(
                    f"  {scenes:>2} scenes, repeat {repeat + 1}: pipeline {total['wall_s']:.2f} s, "
                    f"baseline {base['wall_s']:.2f} s, reads {total['reads']}, writes "
                    f"{total['writes']}{'; PROBLEMS: ' + '; '.join(run['problems']) if run['problems'] else ''}",
                    flush=True,
                )
    finally:
        stack.stop()
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
        "runs": runs,
    }
    print()
    print("\n".join(table_lines(table)))
    if len(table) > 1:
        print()
        print("\n".join(growth_lines(report["growth"])))
    write_reports(report, args.out)
    print(
        f"\nwhole run {report['run_s']:.0f} s; reports in {args.out}/pipeline.md and pipeline.json"
    )
    failed = [p for r in runs for p in r["problems"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
