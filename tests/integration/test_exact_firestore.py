"""Behaviour that depends on Firestore semantics the npm emulator does not have.

Run with FRAMEFORK_EXACT_FIRESTORE=1 and FIRESTORE_EMULATOR_HOST pointing at the official
emulator (or real Firestore); skipped, visibly, otherwise."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc

from shared.clients import firestore_client
from shared.models.assets import Asset, AssetType
from shared.models.manifests import Manifest
from shared.repositories.manifests import ManifestChange, ManifestRepository
from tests.integration.conftest import Api

pytestmark = pytest.mark.exact_firestore


def test_a_change_whose_batch_fails_writes_nothing_and_blocks_nothing(api: Api) -> None:
    manifest_id = api.manifest("atomic")["id"]
    repository = ManifestRepository(firestore_client(), max_attempts=1)
    ghost = Asset(
        id="ghost",
        manifest_id=manifest_id,
        asset_type=AssetType.OTHER,
        manifest_tag="OTHER_09",
        name="g",
    )

    def plan(manifest: Manifest) -> ManifestChange[None]:
        manifest.name = "half written"
        renamed = ghost.model_copy(update={"name": "still a ghost"})
        return ManifestChange(manifest, None, updated_assets=[(ghost, renamed)])

    with pytest.raises(gexc.NotFound):  # the update of a missing asset fails the whole batch
        repository.change(manifest_id, plan)
    after = api.ok("GET", f"/manifests/{manifest_id}")["manifest"]
    assert after["name"] == "atomic"
    assert after["version"] == 1
    # The revision claim must have been rolled back with the rest, or every later write
    # would collide with it forever.
    assert api.asset(manifest_id)["manifest_tag"] == "CHAR_01"
