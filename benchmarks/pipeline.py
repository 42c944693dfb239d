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
    calls: Counter[str] = field(default_factory=Counter)
    """Model calls by kind: text (storyboard), image (keyframe), video (clip started),
    video_poll, stitch."""
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
    """A provider whose calls are counted by kind and add their time to the phase under way:
    the model work."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = inner.name if hasattr(inner, "name") else type(inner).__name__

    async def storyboard(self, request: Any) -> Any:
        return await self._timed_async("text", self._inner.storyboard(request))

    async def keyframe(self, request: Any) -> Any:
        return await self._timed_async("image", self._inner.keyframe(request))

    async def start_clip(self, request: Any) -> Any:
        return await self._timed_async("video", self._inner.start_clip(request))

    async def poll_clip(self, operation: Any) -> Any:
        return await self._timed_async("video_poll", self._inner.poll_clip(operation))

    def stitch(self, clips: list[bytes]) -> bytes:
        tally, started = METER.current, time.perf_counter()
        tally.calls["stitch"] += 1
        try:
            data: bytes = self._inner.stitch(clips)
            return data
        finally:
            tally.provider_s += time.perf_counter() - started

    async def _timed_async(self, kind: str, call: Any) -> Any:
        tally, started = METER.current, time.perf_counter()
        tally.calls[kind] += 1
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
        take_seed=TAKE_SEED,
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
            "calls": dict(t.calls),
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
    services.pipeline._dispatcher = lambda: tasks
    phases: list[Phase] = []
    with measured(clock, "generate", phases):
        project = services.projects.generate(Identity(OWNER), generate_request(scenes, manifest.id))
    outcomes = deliver(services, tasks, clock, phases)
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
        "project_id": project.id,
        "scenes": stored_scenes,
        "final_video": stored.final_video_object if stored else None,
        "checkpoint_bytes": max(len(json.dumps(c.model_dump(mode="json"))) for c in checkpoints)
        if checkpoints
        else 0,
    }


def deliver(services: Any, tasks: Tasks, clock: Clock, phases: list[Phase]) -> list[Any]:
    """Runs what was queued, and what that queues, in order: each task a measured phase."""
    outcomes = []
    while tasks.queued:
        task = tasks.queued.pop(0)
        with measured(clock, task.stage.value, phases):
            outcomes.append(services.pipeline.run(task))
    return outcomes


CONTINUED = ("continue", "keyframes", "clips", "stitch")
"""The continue as a user waits for it: the request and the stages it sets off (the edit and
the plan before it are measured apart)."""
EXPECTED_CALLS = {"image": 2, "video": 1, "stitch": 1, "text": 0}
"""One scene's two keyframe prompts edited at the storyboard checkpoint: its start and end
keyframes, its clip and the stitch are made; everything else is reused from the artifact index."""
KINDS = ("text", "image", "video", "video_poll", "stitch")
MEDIA = ("start_frame_object", "end_frame_object", "clip_object")
FORKED = ("fork", "keyframes", "clips", "stitch")
"""The fork as a user waits for it: the fork request and the stages it sets off (the preview
before it is measured apart)."""
BY_KIND = {"keyframes": "image", "clips": "video", "stitch": "stitch"}


def _seen_calls(phases: list[Phase]) -> tuple[Counter[str], dict[str, int]]:
    """Model calls of these phases, and as compared: the expected kinds first, then any other."""
    calls: Counter[str] = Counter()
    for phase in phases:
        calls.update(phase.tally.calls)
    kinds = (*EXPECTED_CALLS, *sorted(calls.keys() - EXPECTED_CALLS.keys()))
    return calls, {k: calls.get(k, 0) for k in kinds}


def _changed(before: list[Any], after: list[Any], final_before: Any, final_after: Any) -> list[str]:
    changed = [
        f"scene {b.index} {field.removesuffix('_object')}"
        for b, a in zip(before, after, strict=False)
        for field in MEDIA
        if getattr(b, field) != getattr(a, field)
    ]
    return changed + (["final video"] if final_before != final_after else [])


def _call_problems(what: str, seen: dict[str, int], plan: Any, calls: Counter[str]) -> list[str]:
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
    return problems


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


def run_continue(services: Any, clock: Clock, full: dict[str, Any]) -> dict[str, Any]:
    """The finished project of `full`: one scene's two keyframe prompts edited at the storyboard
    checkpoint, the plan read, then continued with auto_continue, as the routes do (PATCH
    …/scenes/{i}, GET …/plan, POST …/continue call these service methods)."""
    from shared.auth import Identity
    from shared.models.checkpoints import SceneEdit
    from shared.models.projects import ProjectStatus, Stage
    from shared.pipeline.runner import StageOutcome

    identity, project_id, repo = Identity(OWNER), full["project_id"], services.projects_repo
    tasks = Tasks()
    services.pipeline._dispatcher = lambda: tasks
    with METER.phase():
        storyboard = next(c for c in repo.checkpoints(project_id) if c.stage is Stage.STORYBOARD)
    edited = len(full["scenes"]) // 2
    phases: list[Phase] = []
    with measured(clock, "edit", phases):
        services.checkpoints.edit_scene(
            identity, project_id, storyboard.id, edited, SceneEdit(**EDITED_PROMPTS)
        )
    with measured(clock, "plan", phases):
        planned = services.checkpoints.plan(identity, project_id, storyboard.id)
    with measured(clock, "continue", phases):
        _, answered = services.checkpoints.continue_from(
            identity, project_id, storyboard.id, auto_continue=True
        )
    outcomes = deliver(services, tasks, clock, phases)
    with METER.phase():  # reading back, for the checks
        stored = repo.get(project_id)
        after = repo.scenes(project_id)
    calls, seen = _seen_calls(phases)
    changed = _changed(
        full["scenes"], after, full["final_video"], stored.final_video_object if stored else None
    )
    problems = _call_problems("continue", seen, planned, calls)
    if [p.name for p in phases[3:]] != ["keyframes", "clips", "stitch"] or outcomes != [
        StageOutcome.DONE
    ] * 3:
        problems.append(
            f"continue ran {[p.name for p in phases[3:]]}: {[o.value for o in outcomes]}"
        )
    if stored is None or stored.status is not ProjectStatus.COMPLETE or stored.branch != "main-1":
        problems.append(
            f"after the continue: {stored.status.value if stored else 'missing'}, branch "
            f"{stored.branch if stored else '?'}"
        )
    if planned.model_dump() != answered.model_dump():
        problems.append("the plan read before the continue differs from the continue's answer")
    if len(after) != len(full["scenes"]) or any(
        not c.startswith(f"scene {edited} ") and c != "final video" for c in changed
    ):
        problems.append(f"media changed beyond scene {edited}: {', '.join(changed)}")
    return {
        "phases": phases,
        "problems": problems,
        "edited_scene": edited,
        "calls": seen,
        "changed": changed,
        "plan": _plan_row(planned),
    }


def run_fork(services: Any, clock: Clock, full: dict[str, Any]) -> dict[str, Any]:
    """The finished project of `full`, forked with one scene's two keyframe prompts edited:
    the preview, then the fork, as the routes do (POST …/forks/preview and POST …/forks call
    these service methods); the fork's stage tasks delivered here. The source is only read."""
    from shared.auth import Identity
    from shared.models.checkpoints import SceneEdit
    from shared.models.forks import ForkRequest
    from shared.models.projects import ProjectStatus
    from shared.pipeline.runner import StageOutcome

    identity, source_id, repo = Identity(OWNER), full["project_id"], services.projects_repo
    tasks = Tasks()
    services.pipeline._dispatcher = lambda: tasks
    edited = len(full["scenes"]) // 2
    request = ForkRequest(scene_edits={edited: SceneEdit(**FORK_PROMPTS)})
    phases: list[Phase] = []
    with measured(clock, "preview", phases):
        previewed = services.forks.preview(identity, source_id, request)
    with measured(clock, "fork", phases):
        # (project, preview), and with uploads in the work tree (project, preview, slots).
        project, answered, *_ = services.forks.fork(identity, source_id, request)
    outcomes = deliver(services, tasks, clock, phases)
    with METER.phase():  # reading back, for the checks
        stored = repo.get(project.id)
        after = repo.scenes(project.id)
        source = repo.get(source_id)
        source_scenes = repo.scenes(source_id)
    calls, seen = _seen_calls(phases)
    changed = _changed(
        full["scenes"], after, full["final_video"], stored.final_video_object if stored else None
    )
    problems = _call_problems("fork", seen, previewed.plan, calls)
    if [p.name for p in phases[2:]] != ["keyframes", "clips", "stitch"] or outcomes != [
        StageOutcome.DONE
    ] * 3:
        problems.append(f"fork ran {[p.name for p in phases[2:]]}: {[o.value for o in outcomes]}")
    if (
        stored is None
        or stored.status is not ProjectStatus.COMPLETE
        or len(after) != len(full["scenes"])
    ):
        problems.append(
            f"the fork: {stored.status.value if stored else 'missing'}, {len(after)} scenes"
        )
    if previewed.model_dump() != answered.model_dump():
        problems.append("the fork's preview differs from the fork's answer")
    if any(not c.startswith(f"scene {edited} ") and c != "final video" for c in changed):
        problems.append(f"fork media changed beyond scene {edited}: {', '.join(changed)}")
    if (
        source is None
        or source.status is not ProjectStatus.COMPLETE
        or _changed(full["scenes"], source_scenes, full["final_video"], source.final_video_object)
    ):
        problems.append("the fork changed its source")
    return {
        "phases": phases,
        "problems": problems,
        "edited_scene": edited,
        "calls": seen,
        "changed": changed,
        "plan": _plan_row(previewed.plan),
        "storyboard": previewed.storyboard,
        "assets": previewed.assets.model_dump() if previewed.assets else None,
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
    from shared.pipeline.provenance import keyframe_prompt
    from shared.pipeline.storyboard import place_scene

    request = generate_request(scenes, manifest.id)
    seed = request.take_seed  # no re-rolls: every model call of the take gets the take's seed
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

    with measured(clock, "keyframes", phases):
        for scene in placed:
            frames.append(
                (keyframe(scene.keyframe_prompt, scene), keyframe(scene.end_keyframe_prompt, scene))
            )
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
                        seed=seed,
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
    stack: LocalStack, services: Any, clock: Clock, scenes: int, repeat: int, baseline_first: bool,
    edit: bool = False,
) -> dict[str, Any]:  # fmt: skip
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
    # Last: the project the pipeline finished, forked with one scene edited (which only reads
    # it), then that scene edited in the project itself and continued.
    forked = run_fork(services, clock, pipeline) if edit else None
    continued = run_continue(services, clock, pipeline) if edit else None
    problems = list(pipeline["problems"])
    for scenario in (forked, continued):
        problems += scenario["problems"] if scenario else []
    for kind in ("keyframes", "clips", "stitch"):
        if pipeline["media"][kind] != baseline["media"][kind]:
            problems.append(f"{kind}: baseline output differs from the pipeline's")
        ours = [dict(p.tally.calls) for p in pipeline["phases"] if p.name == kind]
        theirs = [dict(p.tally.calls) for p in baseline["phases"] if p.name == kind]
        if ours != theirs:
            problems.append(f"{kind}: model calls of the pipeline and the baseline differ")
    for phase in baseline["phases"]:
        if phase.tally.firestore_calls or phase.tally.rpcs:
            problems.append(f"baseline {phase.name} touched Firestore")
    labelled = [("", p) for p in pipeline["phases"]]
    for label, scenario in (("fork: ", forked), ("continue: ", continued)):
        labelled += [(label, p) for p in (scenario["phases"] if scenario else [])]
    for label, phase in labelled:
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
            problems.append(f"{label}{phase.name}: RPCs {dict(rpc)} vs counted {expected}")
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
            for key, scenario in (("fork", forked), ("continue", continued))
        },
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
                found[measure] = {"median": statistics.median(values), "min": min(values),
                                  "max": max(values)}  # fmt: skip
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


def continue_section(cont: dict[str, Any] | None) -> list[str]:
    if cont is None:
        return []
    n = cont["scenes"]
    return [
        f"## Continue after one scene edit (N = {n})",
        "",
        f"Each repeat's {n}-scene project, once finished, has scene {cont['edited_scene']}'s "
        "`keyframe_prompt` and `end_keyframe_prompt` edited at its storyboard checkpoint (`CheckpointService.edit_scene`, "
        "what `PATCH …/checkpoints/{cid}/scenes/{i}` calls), the plan read "
        "(`GET …/checkpoints/{cid}/plan`), and is continued with `auto_continue` "
        "(`continue_from`, what `POST …/checkpoints/{cid}/continue` calls); the stage tasks it "
        "queues are delivered in this process. **continue total** is the request and those "
        "stages, against the **full run** that made the project, in the same repeat: "
        f"medians of {cont['repeats']} repeat(s), and the median (min–max) of the per-repeat "
        "ratios. Model calls are counted by wrapping the providers (per repeat). The fork "
        "above ran first, on the same project; it only reads its source.",
        "",
        *continue_lines(cont),
        "",
        *[f"- {line}" for line in continue_summary(cont)],
        "",
    ]


def fork_section(fork: dict[str, Any] | None) -> list[str]:
    if fork is None:
        return []
    n = fork["scenes"]
    return [
        f"## Fork with one scene edit (N = {n})",
        "",
        f"Each repeat's {n}-scene project, once finished (before the continue below), is forked "
        f"with scene {fork['edited_scene']}'s `keyframe_prompt` and `end_keyframe_prompt` "
        "edited (`ForkRequest(scene_edits=…)`, other words than the continue's): the preview "
        "(`ForkService.preview`, what `POST …/forks/preview` calls), then the fork "
        "(`ForkService.fork`, what `POST …/forks` calls: the fork's manifest, its snapshot, "
        "its storyboard checkpoint and scenes, its project document, its first task); the "
        "stage tasks it queues are delivered in this process. **fork** is that call alone; "
        "**fork total** is the fork call and its stages, against the **full run** that made "
        f"the source, in the same repeat: medians of {fork['repeats']} repeat(s), and the "
        "median (min–max) of the per-repeat ratios. Model calls are counted against the "
        "preview's plan.",
        "",
        *continue_lines(fork),
        "",
        *[f"- {line}" for line in continue_summary(fork)],
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
        *fork_section(report.get("fork")),
        *continue_section(report.get("continue")),
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
            one_size(stack, services, clock, 3, repeat=99, baseline_first=False, edit=True)
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
                    stack,
                    services,
                    clock,
                    scenes,
                    repeat,
                    baseline_first=repeat % 2 == 1,
                    edit=scenes == max(profile.sizes),
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
        f"\nwhole run {report['run_s']:.0f} s; reports in {args.out}/pipeline.md and pipeline.json"
    )
    failed = [p for r in runs for p in r["problems"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
