import numpy as np

from shared.manifesting.grouping import assign_face_groups
from shared.models.assets import Asset, AssetType, BoundingBox, FaceEmbedding

MODEL = "sface-test"


def face(
    id_: str,
    vector: list[float],
    source: str | None = None,
    box: tuple[int, ...] | None = None,
    group: str | None = None,
) -> Asset:
    v = np.array(vector, dtype=np.float32)
    return Asset(
        id=id_, manifest_id="m", asset_type=AssetType.CHARACTER, manifest_tag=id_, name=id_,
        source_asset_id=source,
        crop_bbox=BoundingBox(x=box[0], y=box[1], width=box[2], height=box[3]) if box else None,
        face_embedding=FaceEmbedding(model=MODEL, vector=(v / np.linalg.norm(v)).tolist()),
        face_confidence=0.9, face_bbox=BoundingBox(x=0, y=0, width=10, height=10), face_group_id=group,
    )  # fmt: skip


def groups(assets: list[Asset]) -> dict[str, str]:
    return assign_face_groups(assets, model=MODEL, threshold=0.8, ambiguous_margin=0.1).groups


def test_two_people_of_one_photo_never_share_a_group_however_alike() -> None:
    left = face("left", [1, 0.2, 0], source="photo", box=(0, 0, 100, 200))
    right = face("right", [1, 0.25, 0], source="photo", box=(300, 0, 100, 200))
    elsewhere = face("elsewhere", [1, 0.22, 0], source="other", box=(0, 0, 50, 50))
    found = groups([left, right, elsewhere])
    assert found["left"] != found["right"]
    assert found["elsewhere"] in (found["left"], found["right"])


def test_overlapping_crops_of_one_photo_may_be_one_person() -> None:
    a = face("a", [1, 0.2, 0], source="photo", box=(0, 0, 100, 200))
    b = face("b", [1, 0.21, 0], source="photo", box=(10, 10, 100, 200))
    found = groups([a, b])
    assert found["a"] == found["b"]


def test_group_ids_survive_a_regrouping() -> None:
    first = face("first", [0, 1, 0], group="face-keep")
    second = face("second", [0, 1, 0.05])
    found = groups([first, second])
    assert found == {"first": "face-keep", "second": "face-keep"}
