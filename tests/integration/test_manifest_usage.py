"""Manifest snapshots and usage (M4), as the generate endpoint will use them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from functions.services import services
from shared.auth import Identity
from shared.clients import firestore_client
from shared.errors import Conflict, NotFound
from tests.integration.conftest import Api

OWNER = Identity("dev-user")


def ready_manifest(api: Api, assets: int = 2) -> str:
    manifest_id: str = api.manifest("Cast")["id"]
    for i in range(assets):
        api.asset(manifest_id, name=f"hero {i}")
    # The manifesting engine sets READY; here the test stands in for it.
    firestore_client().collection("manifests").document(manifest_id).update({"status": "READY"})
    return manifest_id


def test_a_snapshot_freezes_the_manifest_and_counts_one_use(api: Api) -> None:
    manifest_id = ready_manifest(api)
    snapshot = services().usage.snapshot_for_generation(OWNER, manifest_id, "project-1")

    api.ok(
        "PATCH",
        f"/manifests/{manifest_id}/assets/{snapshot.asset_ids[0]}",
        json={"name": "renamed"},
    )
    api.asset(manifest_id, name="added later")

    frozen = services().usage.read_snapshot("project-1")
    assert frozen is not None
    assert [a.name for a in frozen.assets] == ["hero 0", "hero 1"]
    assert frozen.snapshot.manifest_version == snapshot.manifest_version
    live = api.ok("GET", f"/manifests/{manifest_id}")["manifest"]
    assert live["times_used"] == 1
    assert live["last_used_at"] is not None
    assert live["version"] == snapshot.manifest_version + 2  # usage is not a content change


def test_a_redelivered_generate_reuses_the_snapshot_and_counts_nothing_twice(api: Api) -> None:
    manifest_id = ready_manifest(api)
    with ThreadPoolExecutor(max_workers=4) as pool:
        taken = list(
            pool.map(
                lambda _: services().usage.snapshot_for_generation(OWNER, manifest_id, "p"),
                range(4),
            )
        )
    assert len({s.created_at for s in taken}) == 1
    assert api.ok("GET", f"/manifests/{manifest_id}")["manifest"]["times_used"] == 1


def test_usage_orders_the_list_by_times_used(api: Api) -> None:
    popular, quiet = ready_manifest(api, 0), ready_manifest(api, 0)
    for project in ("a", "b"):
        services().usage.snapshot_for_generation(OWNER, popular, project)
    services().usage.snapshot_for_generation(OWNER, quiet, "c")
    ids = [m["id"] for m in api.ok("GET", "/manifests?sort=times_used")["items"]]
    assert ids == [popular, quiet]


def test_a_draft_manifest_cannot_be_used_to_generate(api: Api) -> None:
    draft = api.manifest("draft")["id"]
    with pytest.raises(Conflict, match="only a READY manifest"):
        services().usage.snapshot_for_generation(OWNER, draft, "p")


def test_someone_elses_manifest_cannot_be_used(api: Api) -> None:
    manifest_id = ready_manifest(api, 0)
    with pytest.raises(NotFound):
        services().usage.snapshot_for_generation(Identity("mallory"), manifest_id, "p")
