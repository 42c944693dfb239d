import pytest
from pydantic import ValidationError

from shared.models.assets import AssetCreate, AssetType, manifest_tag
from shared.models.manifests import Manifest, ManifestCreate
from shared.registry import count_asset, issue_tag


def test_tags_have_two_digits_and_grow_past_ninety_nine() -> None:
    assert manifest_tag(AssetType.CHARACTER, 1) == "CHAR_01"
    assert manifest_tag(AssetType.VEHICLE, 12) == "VEH_12"
    assert manifest_tag(AssetType.OBJECT, 100) == "OBJ_100"


def test_issued_tags_never_repeat_after_the_count_goes_down() -> None:
    manifest = Manifest(id="m", owner_id="u", name="n")
    first = issue_tag(manifest, AssetType.PROP)
    count_asset(manifest, AssetType.PROP, +1)
    count_asset(manifest, AssetType.PROP, -1)
    assert issue_tag(manifest, AssetType.PROP) != first
    assert manifest.tag_counters[AssetType.PROP] == 2
    assert manifest.asset_count == 0
    assert AssetType.PROP not in manifest.asset_type_counts


def test_names_with_control_characters_are_refused() -> None:
    with pytest.raises(ValidationError, match="control characters"):
        ManifestCreate(name="bad\x1fname")


def test_blank_names_are_refused_after_trimming() -> None:
    with pytest.raises(ValidationError):
        ManifestCreate(name="   ")


def test_unknown_asset_types_are_refused() -> None:
    with pytest.raises(ValidationError, match="CHARACTER"):
        AssetCreate.model_validate({"asset_type": "DRAGON", "name": "x"})


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        ManifestCreate.model_validate({"name": "x", "colour": "blue"})
