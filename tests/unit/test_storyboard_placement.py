import pytest

from shared.models.assets import Asset, AssetType, ImageInfo
from shared.pipeline.ports import SceneDraft, ShotType
from shared.pipeline.provenance import keyframe_prompt
from shared.pipeline.storyboard import place_scene, remap_tag

IMAGE = ImageInfo(
    object_name="o", thumbnail_object_name="t", content_type="image/jpeg", width=1, height=1,
    size_bytes=1, sha256="s", source_object="u", source_generation="1",
)  # fmt: skip


def asset(tag: str, kind: AssetType, name: str, **fields: object) -> Asset:
    values: dict[str, object] = {"image": IMAGE}
    values.update(fields)
    return Asset(
        id=f"id-{tag}", manifest_id="m", asset_type=kind, manifest_tag=tag, name=name, **values
    )  # type: ignore[arg-type]


ASSETS = [
    asset(
        "CHAR_01",
        AssetType.CHARACTER,
        "Ada",
        reverse_prompt="a woman in a red coat",
        quality_score=6,
    ),
    asset("CHAR_02", AssetType.CHARACTER, "Ben", is_face_group_primary=True, quality_score=5),
    asset("ENV_01", AssetType.ENVIRONMENT, "Harbour", reverse_prompt="a foggy harbour at dawn"),
    asset("PROP_01", AssetType.PROP, "Lamp"),
    asset("STYLE_01", AssetType.STYLE, "Noir"),
]


def draft(
    tags: list[str], shot: ShotType = ShotType.WIDE, prompt: str = "HERO walks"
) -> SceneDraft:
    return SceneDraft(
        title="t", description="d", shot_type=shot, keyframe_prompt=prompt,
        end_keyframe_prompt=prompt, motion_prompt=prompt, asset_tags=tags,
    )  # fmt: skip


def test_invented_tags_are_mapped_to_the_manifests_own() -> None:
    by_tag = {a.manifest_tag: a for a in ASSETS}
    assert remap_tag("CHAR_01", by_tag, set()) == "CHAR_01"
    assert remap_tag("char-1", by_tag, set()) == "CHAR_01"
    assert remap_tag("Harbour", by_tag, set()) == "ENV_01"
    assert remap_tag("CHAR_99", by_tag, {"CHAR_01"}) == "CHAR_02"  # the first unused character
    assert remap_tag("DRAGON_01", by_tag, set()) is None


def test_a_scene_keeps_only_manifest_tags_and_says_what_it_changed() -> None:
    placed = place_scene(draft(["HERO_1", "CHAR_07", "ENV_01", "UNICORN"]), ASSETS)
    assert placed.asset_tags == ["CHAR_01", "ENV_01"]
    assert placed.remapped == {"CHAR_07": "CHAR_01"}
    assert placed.dropped == ["HERO_1", "UNICORN"]


def test_prompts_are_rewritten_with_the_reverse_prompts_and_the_real_tags() -> None:
    placed = place_scene(draft(["CHAR_07"], prompt="CHAR_07 waits by the water"), ASSETS)
    assert placed.keyframe_prompt.startswith("CHAR_01 waits by the water")
    assert "a woman in a red coat" not in placed.keyframe_prompt, "added when it is sent"
    by_tag = {a.manifest_tag: a for a in ASSETS}
    sent = keyframe_prompt(placed.keyframe_prompt, placed.asset_tags, by_tag)
    assert "a woman in a red coat" in sent


def test_references_follow_the_shot_type_and_stop_at_three() -> None:
    tags = ["PROP_01", "STYLE_01", "CHAR_01", "CHAR_02", "ENV_01"]
    wide = place_scene(draft(tags, ShotType.WIDE), ASSETS).reference_asset_ids
    close = place_scene(draft(tags, ShotType.CLOSE_UP), ASSETS).reference_asset_ids
    insert = place_scene(draft(tags, ShotType.INSERT), ASSETS).reference_asset_ids
    assert wide == ["id-ENV_01", "id-CHAR_02", "id-CHAR_01"]
    assert close[:2] == ["id-CHAR_02", "id-CHAR_01"]  # the face group's primary first
    assert insert[0] == "id-PROP_01"
    assert all(len(r) <= 3 for r in (wide, close, insert))


def test_assets_without_images_are_never_references() -> None:
    bare = [*ASSETS, asset("OBJ_01", AssetType.OBJECT, "Key", image=None)]
    assert place_scene(draft(["OBJ_01"], ShotType.INSERT), bare).reference_asset_ids == []


def test_a_tag_the_storyboard_names_in_its_character_notes_is_mapped_by_that_name() -> None:
    placed = place_scene(draft(["HERO"], prompt="HERO looks out"), ASSETS, aliases={"HERO": "Ben"})
    assert placed.asset_tags == ["CHAR_02"]
    assert placed.keyframe_prompt.startswith("CHAR_02 looks out")


def test_veo_is_built_for_vertex_ai_and_refused_clearly_without_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.errors import ServiceUnavailable
    from shared.models.projects import Project
    from shared.pipeline.providers import providers_for
    from shared.settings import get_settings

    project = Project(
        id="p", owner_id="u", name="n", prompt="p", clip_seconds=4, total_seconds=8, scene_count=2,
        text_model="local-storyboard-1", image_model="local-keyframe-1",
        video_model="veo-3.0-fast-generate-001",
    )  # fmt: skip
    monkeypatch.setenv("FRAMEFORK_MODELS__GEMINI_API_KEY", "a-gemini-key")
    get_settings.cache_clear()
    try:
        with pytest.raises(ServiceUnavailable, match="VERTEX_PROJECT"):
            _ = providers_for(project).video
        monkeypatch.setenv("FRAMEFORK_MODELS__VERTEX_PROJECT", "my-project")
        get_settings.cache_clear()
        video = providers_for(project).video
        assert video.name == "veo-3.0-fast-generate-001"
        assert providers_for(project).text.name == "local-storyboard-1"  # built lazily, no key
    finally:
        get_settings.cache_clear()
