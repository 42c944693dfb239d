from datetime import UTC, datetime

from PIL import Image

from shared.manifesting.contact_sheet import SheetEntry, make_contact_sheet
from shared.manifesting.planning import derived_assets, detection_targets, scope_of
from shared.manifesting.ports import Detection
from shared.models.assets import Asset, AssetSource, AssetType, BoundingBox, ImageInfo
from shared.settings import ModelSettings

SETTINGS = ModelSettings()
IMAGE = ImageInfo(
    object_name="images/x/image.jpg", thumbnail_object_name="images/x/thumbnail.webp",
    content_type="image/jpeg", width=800, height=600, size_bytes=1, sha256="x",
    source_object="u", source_generation="1",
)  # fmt: skip


def asset(id_: str, kind: AssetType = AssetType.CHARACTER, **fields: object) -> Asset:
    values: dict[str, object] = {"image": IMAGE, "created_at": datetime(2026, 1, 1, tzinfo=UTC)}
    values.update(fields)
    return Asset(id=id_, manifest_id="m", asset_type=kind, manifest_tag="T", name=id_, **values)  # type: ignore[arg-type]


def detection(name: str, confidence: float, x: int, y: int, w: int, h: int) -> Detection:
    return Detection(name, confidence, BoundingBox(x=x, y=y, width=w, height=h))


def test_derived_assets_are_ranked_by_confidence_with_ids_from_source_and_rank() -> None:
    image = Image.new("RGB", (800, 600))
    found = derived_assets(
        asset("src", AssetType.ENVIRONMENT), image,
        [detection("person", 0.5, 10, 10, 100, 200), detection("motorbike", 0.9, 300, 300, 200, 100)],
        SETTINGS,
    )  # fmt: skip
    assert [(d.id, d.class_name, d.asset_type) for d in found] == [
        ("src-d01", "motorcycle", AssetType.VEHICLE),  # Darknet's spelling made canonical
        ("src-d02", "person", AssetType.CHARACTER),
    ]
    # Crops keep a margin of 10% of the box on each side, clipped to the image (at the top
    # here: the box starts 10 px below the edge, less than its 20 px margin).
    assert found[1].image.size == (10 + 100 + 10, 10 + 200 + 20)


def test_weak_tiny_and_whole_frame_detections_make_no_crop() -> None:
    image = Image.new("RGB", (800, 600))
    found = derived_assets(
        asset("src", AssetType.ENVIRONMENT), image,
        [detection("cup", 0.1, 0, 0, 100, 100), detection("cup", 0.9, 0, 0, 10, 10),
         detection("person", 0.9, 0, 0, 800, 600)],
        SETTINGS,
    )  # fmt: skip
    assert found == []


def test_a_mostly_empty_photo_also_becomes_a_whole_scene_environment() -> None:
    image = Image.new("RGB", (800, 600))
    found = derived_assets(
        asset("src", AssetType.OBJECT), image, [detection("cup", 0.9, 0, 0, 100, 100)], SETTINGS
    )
    assert [d.id for d in found] == ["src-d01", "src-scene"]
    assert found[1].asset_type is AssetType.ENVIRONMENT


def test_a_portrait_or_a_crowded_photo_is_no_scene() -> None:
    image = Image.new("RGB", (800, 600))
    portrait = derived_assets(
        asset("p"), image, [detection("person", 0.9, 0, 0, 790, 600)], SETTINGS
    )
    missed_close_up = derived_assets(asset("c"), image, [], SETTINGS)
    crowded = derived_assets(
        asset("o", AssetType.OBJECT), image, [detection("car", 0.9, 0, 0, 600, 500)], SETTINGS
    )
    assert portrait == [] and missed_close_up == []
    assert all(not d.is_environment for d in crowded)


def test_a_character_photo_never_becomes_a_scene_whatever_small_things_it_shows() -> None:
    image = Image.new("RGB", (800, 600))
    with_a_tie = derived_assets(
        asset("p", AssetType.CHARACTER), image, [detection("tie", 0.9, 380, 300, 40, 120)],
        SETTINGS,
    )  # fmt: skip
    assert [d.class_name for d in with_a_tie] == ["tie"]
    assert not any(d.is_environment for d in with_a_tie)


def test_detection_covers_uploads_not_done_yet_in_a_stable_order_except_styles() -> None:
    assets = [
        asset("b", sort_order=2), asset("a", sort_order=1),
        asset("done", sort_order=0, detected_by="yolo"),
        asset("style", AssetType.STYLE), asset("crop", source=AssetSource.EXTRACTED),
        asset("no-image", image=None),
    ]  # fmt: skip
    assert [a.id for a in detection_targets(assets, "yolo")] == ["a", "b"]
    assert [a.id for a in detection_targets(assets, "another-model")] == ["done", "a", "b"]


def test_a_reprocess_covers_the_asset_and_what_was_derived_from_it() -> None:
    assets = [asset("a"), asset("a-d01", source_asset_id="a"), asset("b")]
    assert [a.id for a in scope_of(assets, ["a"])] == ["a", "a-d01"]
    assert [a.id for a in scope_of(assets, None)] == ["a", "a-d01", "b"]


def test_the_contact_sheet_is_a_grid_of_numbered_cells() -> None:
    entries = [
        SheetEntry(Image.new("RGB", (400, 300), (200, 0, 0)), f"CHAR_0{i}") for i in range(5)
    ]
    sheet = make_contact_sheet(entries)
    assert sheet.size == (4 * 264 + 8, 2 * (256 + 40 + 8) + 8)
    assert sheet.getpixel((8 + 128, 8 + 128)) == (200, 0, 0)  # first cell holds the image
