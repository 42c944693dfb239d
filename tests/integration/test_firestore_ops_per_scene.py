"""Firestore reads and writes of a whole pipeline run grow in proportion to its scenes, never
faster: the figure benchmarks/pipeline.py reports, kept as an assertion.

A project is generated and its four stage tasks delivered in this process, as the benchmark
and the run_stage function do (`services().projects.generate`, then `pipeline.run(task)`),
once with few scenes and once with more, each from emptied emulators with the same READY
manifest and take seed. Operations are counted where the Firestore client sends them
(tests/support/firestore_counter.py, which the benchmark uses too).
"""

from __future__ import annotations

from typing import Any

import pytest

from functions.services import services
from shared.auth import Identity
from shared.models.projects import GenerateRequest, Project, ProjectStatus
from shared.pipeline.local_provider import (
    LocalImageModel,
    LocalStitcher,
    LocalTextModel,
    LocalVideoModel,
)
from shared.pipeline.providers import Providers
from shared.pipeline.runner import StageOutcome
from tests.integration.conftest import Api
from tests.integration.test_pipeline import Tasks, ready_manifest
from tests.integration.test_pipeline import tasks as tasks
from tests.support.firestore_counter import COUNTED_RPCS, FirestoreOps, counting, installed

FEW, MORE = 2, 6
PER_SCENE_MAX = {"reads": 18, "writes": 11}
"""Measured at 2 and 6 scenes: 15 reads and 9 writes per added scene, the same in every run.
Per scene, reads: 7 of its document (the stages list the scenes when they start and again
for their checkpoints), 3 artifact index lookups and 3 spend lines (two keyframes, a clip),
2 of the project (before each scene the keyframes and clips stages make); writes: 3 of the
scene, 3 index entries, 3 spend lines. The rest is fixed: 26 reads and 32 writes (generate,
the manifest snapshot, the checkpoints, the project's guarded changes).
The bounds leave 3 reads and 2 writes per scene of margin, so that one more operation per
scene need not fail here (a deliberate change updates the figures above), while work done
again for every scene in each scene (a stage listing all scenes per scene: N more reads per
scene, 8 more per added scene between 2 and 6 scenes) does."""


@pytest.fixture
def small_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local models with 160×90 keyframes: the same Firestore work, far less pixel work."""
    providers = Providers(
        LocalTextModel(), LocalImageModel(long_side=160), LocalVideoModel(), LocalStitcher()
    )
    monkeypatch.setattr(services().pipeline, "_providers", lambda project: providers)


def counted_run(api: Api, tasks: Tasks, clean_emulators: Any, scenes: int) -> FirestoreOps:
    """Generate and every stage of a `scenes`-scene project, from emptied emulators."""
    clean_emulators.reset()  # same collection sizes, and no artifact left from the other run
    manifest_id, _ = ready_manifest(api)
    request = GenerateRequest(
        prompt="a lighthouse keeper finds a message in a bottle and sets out to answer it",
        clip_seconds=2,
        total_seconds=2 * scenes,
        manifest_id=manifest_id,
        take_seed=7,  # the benchmark's: every keyframe and clip of the take gets this seed
    )
    owner = Identity(services().settings.auth.development_uid)  # the api's identity here
    with counting() as ops:
        project = services().projects.generate(owner, request)
        outcomes = tasks.deliver_all()
    assert outcomes == [StageOutcome.DONE] * 4
    stored: Project | None = services().projects_repo.get(project.id)
    assert stored is not None and stored.status is ProjectStatus.COMPLETE
    assert len(services().projects_repo.scenes(project.id)) == scenes
    # The counts are only as good as the wrappers: every kind of RPC sent must be one they
    # count (kinds only: a retried call sends its RPC twice, and that is no missed read).
    assert set(ops.rpcs) <= COUNTED_RPCS, dict(ops.rpcs)
    return ops


def test_firestore_reads_and_writes_per_scene_do_not_grow_with_the_scene_count(
    api: Api, tasks: Tasks, clean_emulators: Any, small_frames: None
) -> None:
    with installed():
        few = counted_run(api, tasks, clean_emulators, FEW)
        more = counted_run(api, tasks, clean_emulators, MORE)
    for measure, bound in PER_SCENE_MAX.items():
        at_few, at_more = getattr(few, measure), getattr(more, measure)
        per_added_scene = (at_more - at_few) / (MORE - FEW)
        # ops(N) = fixed + per_scene × N: a bounded amount per added scene, and a fixed part
        # that is not negative (the average per scene does not rise from 2 to 6 scenes).
        assert 0 < per_added_scene <= bound, (measure, at_few, at_more)
        assert at_more / MORE <= at_few / FEW, (measure, at_few, at_more)
