"""The optimistic writes of ManifestRepository when a commit's answer is lost."""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core import exceptions as gexc

from shared.auth import Identity
from shared.clients import firestore_client
from shared.models.assets import AssetCreate, AssetType
from shared.models.manifests import ManifestCreate
from shared.registry import Registry
from shared.repositories.manifests import ManifestRepository


class LostAnswer(ManifestRepository):
    """Commits, then fails as the client's resend of that same commit would."""

    def __init__(self, error: Exception) -> None:
        super().__init__(firestore_client())
        self.error = error
        self.commits = 0

    def _commit(self, *args: Any) -> None:
        super()._commit(*args)
        self.commits += 1
        if self.commits == 1:
            raise self.error


@pytest.mark.parametrize(
    "error", [gexc.AlreadyExists("resent"), gexc.ServiceUnavailable("dropped")]
)
def test_a_write_whose_answer_was_lost_is_recognised_and_counted_once(
    clean_emulators: Any, error: Exception
) -> None:
    owner = Identity("dev-user")
    registry = Registry(ManifestRepository(firestore_client()))
    manifest = registry.create_manifest(owner, ManifestCreate(name="m"))
    flaky = LostAnswer(error)

    asset = Registry(flaky).create_asset(
        owner, manifest.id, AssetCreate(asset_type=AssetType.PROP, name="lamp")
    )

    assert flaky.commits == 1  # recognised as landed: not planned and written again
    stored = registry.get_manifest(owner, manifest.id)
    assert [a.id for a in stored.assets] == [asset.id]
    assert stored.manifest.asset_count == 1
    assert stored.manifest.version == 2
    assert stored.manifest.tag_counters == {AssetType.PROP: 1}


def test_a_write_that_did_not_land_is_planned_again(clean_emulators: Any) -> None:
    owner = Identity("dev-user")
    registry = Registry(ManifestRepository(firestore_client()))
    manifest = registry.create_manifest(owner, ManifestCreate(name="m"))

    class NeverSent(ManifestRepository):
        failures = 0

        def _commit(self, *args: Any) -> None:
            if self.failures == 0:
                self.failures += 1
                raise gexc.ServiceUnavailable("connection refused")
            super()._commit(*args)

    asset = Registry(NeverSent(firestore_client())).create_asset(
        owner, manifest.id, AssetCreate(asset_type=AssetType.PROP, name="lamp")
    )
    assert asset.manifest_tag == "PROP_01"
    assert registry.get_manifest(owner, manifest.id).manifest.asset_count == 1
