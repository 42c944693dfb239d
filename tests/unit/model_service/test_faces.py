"""Faces: YuNet + SFace on real photos, the insightface (SCRFD + ArcFace) code on small
graphs built here with buffalo_l's inputs and outputs, and the shared 5-point alignment."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageEnhance, ImageOps

from model_service.backends import face_align
from model_service.backends.face_align import ARCFACE_TEMPLATE, align_face, similarity_transform
from model_service.backends.insightface_onnx import InsightFaceAnalyzer
from model_service.backends.yunet_sface import (
    YuNetSFaceAnalyzer,
    decode_yunet,
    fold_constant_dequantize,
    prepare_sface,
)
from shared.manifesting.ports import Face

ROOT = Path(__file__).resolve().parents[3]
PHOTOS = ROOT / ".local" / "sample-photos"
OFFLINE_MODELS = ROOT / ".models" / "offline"


def photo(name: str) -> Image.Image:
    path = PHOTOS / name
    if not path.is_file():
        pytest.skip(f"{path} missing: run scripts/sample_photos")
    return Image.open(path).convert("RGB")


def centre(face: Face) -> tuple[float, float]:
    return face.box.x + face.box.width / 2, face.box.y + face.box.height / 2


def left_to_right(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda face: centre(face)[0])


def embeddings(faces: list[Face]) -> np.ndarray:
    return np.stack([face.embedding for face in faces])


# --- YuNet + SFace on real photos --------------------------------------------------------


@pytest.fixture(scope="module")
def yunet() -> YuNetSFaceAnalyzer:
    analyzer = YuNetSFaceAnalyzer(OFFLINE_MODELS)
    if not analyzer.available():
        pytest.skip(f"YuNet / SFace files not in {OFFLINE_MODELS}: run scripts/fetch_models")
    analyzer.load()
    return analyzer


@pytest.fixture(scope="module")
def group_photo_faces(yunet: YuNetSFaceAnalyzer) -> list[Face]:
    (faces,) = yunet.analyze([photo("t1.jpg")])
    return faces


def test_the_six_faces_of_the_group_photo_are_found(group_photo_faces: list[Face]) -> None:
    faces = group_photo_faces
    assert len(faces) == 6
    assert [f.confidence for f in faces] == sorted((f.confidence for f in faces), reverse=True)
    for face in faces:
        assert face.confidence >= 0.85
        assert 80 <= face.box.width <= 140 and 100 <= face.box.height <= 170  # 1280x886 photo
        assert face.box.x + face.box.width <= 1280 and face.box.y + face.box.height <= 886
        (right_eye, left_eye, nose, right_mouth, left_mouth) = face.landmarks
        assert right_eye[0] < left_eye[0] and right_mouth[0] < left_mouth[0]
        assert max(right_eye[1], left_eye[1]) < nose[1] < min(right_mouth[1], left_mouth[1])
        assert face.box.x <= nose[0] <= face.box.x + face.box.width
        assert face.embedding.shape == (128,) and face.embedding.dtype == np.float32
        assert float(np.linalg.norm(face.embedding)) == pytest.approx(1.0, abs=1e-5)
    # Six people, none overlapping another.
    centres = np.array([centre(face) for face in faces])
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    assert distances[~np.eye(6, dtype=bool)].min() > 100


@pytest.mark.parametrize(
    "version",
    ["half-size", "brighter", "mirrored"],
)
def test_the_same_face_in_another_version_of_the_photo_matches_and_different_people_do_not(
    yunet: YuNetSFaceAnalyzer, group_photo_faces: list[Face], version: str
) -> None:
    original = photo("t1.jpg")
    if version == "half-size":
        copy = original.resize((640, 443), Image.Resampling.LANCZOS)
    elif version == "brighter":
        copy = ImageEnhance.Brightness(original).enhance(1.2)
    else:
        copy = ImageOps.mirror(original)
    (faces,) = yunet.analyze([copy])
    assert len(faces) == 6
    # The same person is found at the same place (mirrored, right to left).
    ordered = sorted(faces, key=lambda f: centre(f)[0], reverse=version == "mirrored")
    similarity = embeddings(left_to_right(group_photo_faces)) @ embeddings(ordered).T
    threshold = yunet.same_person_threshold
    assert (np.diag(similarity) >= threshold).all(), np.diag(similarity)
    assert (similarity[~np.eye(6, dtype=bool)] < threshold).all()


def test_different_people_in_the_group_photo_are_below_the_threshold(
    yunet: YuNetSFaceAnalyzer, group_photo_faces: list[Face]
) -> None:
    vectors = embeddings(group_photo_faces)
    similarity = vectors @ vectors.T
    assert (similarity[~np.eye(6, dtype=bool)] < yunet.same_person_threshold).all()


def test_a_face_that_fills_the_frame_is_found_thanks_to_padding(
    yunet: YuNetSFaceAnalyzer,
) -> None:
    portrait = photo("Tom_Hanks_54745.png")  # 112x112, head and shoulders
    close_up = portrait.crop((22, 26, 89, 93)).resize((640, 640), Image.Resampling.BICUBIC)
    assert len(yunet.detect(np.asarray(close_up))) == 0  # the frame alone: nothing
    (faces,) = yunet.analyze([close_up])
    assert len(faces) == 1
    face = faces[0]
    assert face.confidence >= 0.85
    assert face.box.width >= 400 and face.box.height >= 400
    nose = face.landmarks[2]
    assert 200 < nose[0] < 440 and 200 < nose[1] < 500
    (original,) = yunet.analyze([portrait])
    assert len(original) == 1


def test_a_tight_crop_of_one_person_is_found_by_padding_and_matched_to_that_person(
    yunet: YuNetSFaceAnalyzer, group_photo_faces: list[Face]
) -> None:
    people = left_to_right(group_photo_faces)
    chosen = 2  # third from the left: a face seen from the front
    box = people[chosen].box
    cx, cy = box.x + box.width / 2, box.y + box.height / 2
    half_w, half_h = box.width * 0.4, box.height * 0.4  # forehead to chin, cheek to cheek
    crop = photo("t1.jpg").crop(
        (round(cx - half_w), round(cy - half_h), round(cx + half_w), round(cy + half_h))
    )
    close_up = crop.resize((480, round(480 * crop.height / crop.width)), Image.Resampling.BICUBIC)
    assert len(yunet.detect(np.asarray(close_up))) == 0
    (faces,) = yunet.analyze([close_up])
    assert len(faces) == 1
    similarity = embeddings(people) @ faces[0].embedding
    assert similarity[chosen] >= yunet.same_person_threshold
    assert (np.delete(similarity, chosen) < yunet.same_person_threshold).all()


def test_both_men_of_the_football_photo_are_found_and_are_different_people(
    yunet: YuNetSFaceAnalyzer,
) -> None:
    (faces,) = yunet.analyze([photo("zidane.jpg")])  # 1280x720
    assert len(faces) == 2
    left, right = left_to_right(faces)
    assert 400 < centre(left)[0] < 800 and centre(right)[0] > 850
    assert float(left.embedding @ right.embedding) < yunet.same_person_threshold


def test_a_photo_without_faces_gives_none_and_a_batch_keeps_its_order(
    yunet: YuNetSFaceAnalyzer,
) -> None:
    blank = Image.new("RGB", (320, 240), (90, 120, 200))
    results = yunet.analyze([blank, photo("Tom_Hanks_54745.png"), blank])
    assert [len(faces) for faces in results] == [0, 1, 0]


def test_sface_embeds_a_batch_as_it_embeds_each_face_alone(
    yunet: YuNetSFaceAnalyzer,
) -> None:
    pixels = np.asarray(photo("t1.jpg"))
    found = yunet.detect(pixels)
    crops, _ = face_align.aligned_crops([pixels], [found])
    together = yunet.embed(crops)
    alone = np.concatenate([yunet.embed(crop[None]) for crop in crops])
    assert together.shape == (6, 128)
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-4)


def test_sface_is_repaired_in_memory_and_its_file_left_untouched() -> None:
    path = OFFLINE_MODELS / "face_recognition_sface_2021dec_int8bq.onnx"
    if not path.is_file():
        pytest.skip(f"{path} missing: run scripts/fetch_models")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    model = onnx.load(str(path))
    assert len(model.graph.input) > 100  # 29 dangling weights and repeated initializers
    repaired = prepare_sface(model)
    assert [value.name for value in repaired.graph.input] == ["data"]
    assert not any(node.op_type == "DequantizeLinear" for node in repaired.graph.node)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_constant_dequantisation_is_folded_per_tensor_per_axis_and_per_block() -> None:
    import onnxruntime as ort

    quantised = np.arange(-12, 12, dtype=np.int8).reshape(2, 12)
    nodes, initializers, expected = [], [], []
    cases: list[tuple[str, np.ndarray, np.ndarray, dict[str, int]]] = [
        (
            "tensor",
            np.array([0.5], np.float32),
            np.array([2], np.int8),
            {"axis": 1, "block_size": 64},
        ),
        ("axis", np.array([0.5, 2.0], np.float32), np.array([1, -1], np.int8), {"axis": 0}),
        (
            "block",
            np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32),
            np.zeros((2, 3), np.int8),
            {"axis": 1, "block_size": 4},
        ),
    ]
    for name, scale, zero, attrs in cases:
        initializers += [
            numpy_helper.from_array(quantised, f"{name}_q"),
            numpy_helper.from_array(scale, f"{name}_s"),
            numpy_helper.from_array(zero, f"{name}_z"),
        ]
        nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{name}_q", f"{name}_s", f"{name}_z"],
                [name],
                **attrs,  # type: ignore[arg-type]
            )
        )
    q = quantised.astype(np.float32)
    expected = [
        (q - 2) * 0.5,
        (q - np.array([[1], [-1]])) * np.array([[0.5], [2.0]]),
        q * np.repeat(cases[2][1], 4, axis=1),
    ]
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 12]) for name, *_ in cases
    ]
    graph = helper.make_graph(nodes, "dq", [], outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    assert fold_constant_dequantize(model) == 3
    assert not model.graph.node
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for (name, *_), want in zip(cases, expected, strict=True):
        np.testing.assert_allclose(values[name], want)
    # onnxruntime runs the folded graph (an identity per output keeps it a real graph).
    model.graph.node.extend(
        helper.make_node("Identity", [name], [f"{name}_out"]) for name, *_ in cases
    )
    del model.graph.output[:]
    model.graph.output.extend(
        helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2, 12])
        for name, *_ in cases
    )
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for got, want in zip(session.run(None, {}), expected, strict=True):
        np.testing.assert_allclose(got, want)


def test_yunet_outputs_decode_as_opencv_decodes_them() -> None:
    height, width = 64, 96
    outputs: dict[str, np.ndarray] = {}
    for stride in (8, 16, 32):
        cells = (height // stride) * (width // stride)
        outputs[f"cls_{stride}"] = np.zeros((1, cells, 1), np.float32)
        outputs[f"obj_{stride}"] = np.zeros((1, cells, 1), np.float32)
        outputs[f"bbox_{stride}"] = np.zeros((1, cells, 4), np.float32)
        outputs[f"kps_{stride}"] = np.zeros((1, cells, 10), np.float32)
    cell = 1 * (width // 16) + 2  # stride 16: row 1, column 2
    outputs["cls_16"][0, cell, 0], outputs["obj_16"][0, cell, 0] = 0.81, 1.2  # obj clipped to 1
    outputs["bbox_16"][0, cell] = [0.5, 0.25, np.log(2.0), np.log(3.0)]
    outputs["kps_16"][0, cell] = [0, 0, 1, 0, 0.5, 0.5, 0, 1, 1, 1]
    found = decode_yunet(outputs, height, width, 0.5)
    assert found.scores.tolist() == pytest.approx([0.9])
    # centre ((2 + 0.5) * 16, (1 + 0.25) * 16) = (40, 20); size (32, 48)
    assert found.boxes.tolist() == [pytest.approx([24, -4, 56, 44])]
    assert found.landmarks[0].tolist() == [
        pytest.approx(p) for p in [[32, 16], [48, 16], [40, 24], [32, 32], [48, 32]]
    ]
    assert len(decode_yunet(outputs, height, width, 0.95)) == 0


# --- 5-point alignment --------------------------------------------------------------------


def test_alignment_maps_landmarks_onto_the_arcface_template() -> None:
    angle, scale, shift = np.radians(25), 2.5, np.array([300.0, 140.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = ARCFACE_TEMPLATE @ (scale * rotation).T + shift
    matrix = similarity_transform(landmarks)
    assert matrix is not None
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, ARCFACE_TEMPLATE, atol=1e-3)
    # A marker under a landmark lands under its template point in the 112x112 crop.
    image = np.zeros((600, 700, 3), np.uint8)
    nose = landmarks[2].round().astype(int)
    cv2.circle(image, (int(nose[0]), int(nose[1])), 6, (255, 0, 0), -1)
    crop = align_face(image, landmarks)
    assert crop is not None and crop.shape == (112, 112, 3)
    ys, xs = np.nonzero(crop[:, :, 0] > 128)
    assert abs(xs.mean() - ARCFACE_TEMPLATE[2, 0]) < 1.0
    assert abs(ys.mean() - ARCFACE_TEMPLATE[2, 1]) < 1.0


def test_degenerate_landmarks_are_not_aligned() -> None:
    assert similarity_transform(np.full((5, 2), 7.0)) is None
    assert align_face(np.zeros((10, 10, 3), np.uint8), np.full((5, 2), 3.0)) is None


def fake_detector(score_on_plain: float | None, score_on_canvas: float) -> Any:
    """Finds one 'face': the box of the non-grey pixels, with one score on the image as
    given and another once it sits on the grey canvas (the canvas is larger)."""
    calls: list[tuple[int, int]] = []

    def detect(pixels: np.ndarray) -> face_align.RawFaces:
        calls.append(pixels.shape[:2])
        on_canvas = len(calls) > 1
        if not on_canvas and score_on_plain is None:
            return face_align.RawFaces.empty()
        ys, xs = np.nonzero((pixels != face_align.CANVAS_GREY).any(axis=2))
        box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        landmarks = np.tile(box[:, None, :2], (1, 5, 1)) + 1
        score = score_on_canvas if on_canvas else score_on_plain
        return face_align.RawFaces(box, np.array([score], np.float32), landmarks)

    detect.calls = calls  # type: ignore[attr-defined]
    return detect


def test_a_close_up_found_nowhere_is_looked_for_on_a_grey_canvas_and_mapped_back() -> None:
    image = np.full((80, 100, 3), 200, np.uint8)
    detect = fake_detector(None, 0.9)
    found = face_align.detect_with_close_up_retry(detect, image)
    assert detect.calls == [(80, 100), (160, 200)]
    np.testing.assert_allclose(found.boxes, [[0, 0, 100, 80]])
    np.testing.assert_allclose(found.landmarks[0], np.ones((5, 2)))


def test_a_frame_filling_face_keeps_whichever_run_scored_it_higher() -> None:
    image = np.full((80, 100, 3), 200, np.uint8)
    assert face_align.detect_with_close_up_retry(fake_detector(0.6, 0.9), image).scores[0] == (
        pytest.approx(0.9)
    )
    assert face_align.detect_with_close_up_retry(fake_detector(0.95, 0.9), image).scores[0] == (
        pytest.approx(0.95)
    )
    small = np.full((400, 400, 3), face_align.CANVAS_GREY, np.uint8)
    small[100:140, 100:140] = 200  # a small face: no retry
    detect = fake_detector(0.8, 0.99)
    assert face_align.detect_with_close_up_retry(detect, small).scores[0] == pytest.approx(0.8)
    assert len(detect.calls) == 1


# --- insightface buffalo_l code on small stand-in graphs ---------------------------------

SCORE_NAMES = ("448", "471", "494")  # det_10g's output names, strides 8, 16, 32
BOX_NAMES = ("451", "474", "497")
KPS_NAMES = ("454", "477", "500")
FACE_SIDE = 64.0
"""Stand-in faces: a 64x64 box around the anchor, landmarks at the template's places."""
KPS_OFFSETS = (ARCFACE_TEMPLATE / 112.0 * FACE_SIDE - FACE_SIDE / 2).reshape(-1)
EMBED_WEIGHTS = np.random.default_rng(42).standard_normal((3, 512)).astype(np.float32)
EMBED_BIAS = np.random.default_rng(43).standard_normal(512).astype(np.float32) * 0.01


def const(name: str, values: Any, dtype: Any = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def scrfd_standin(path: Path, *, output_order: list[int] | None = None) -> None:
    """det_10g's interface: input.1 [1, 3, 640, 640] and, per stride s, scores [2*cells, 1],
    boxes [2*cells, 4] and keypoints [2*cells, 10]. A cell's score (both anchors) is the mean
    of its pixels after the model's normalisation, so only a bright square scores high; boxes
    and keypoints are constants (in strides), so a face's place is known exactly."""
    nodes, inits, outputs = [], [], []
    for level, stride in enumerate((8, 16, 32)):
        cells = (640 // stride) ** 2
        nodes += [
            helper.make_node(
                "AveragePool",
                ["input.1"],
                [f"pool{stride}"],
                kernel_shape=[stride] * 2,
                strides=[stride] * 2,
            ),
            helper.make_node("ReduceMean", [f"pool{stride}"], [f"mean{stride}"], axes=[1]),
            helper.make_node("Reshape", [f"mean{stride}", "column"], [f"flat{stride}"]),
            helper.make_node("Concat", [f"flat{stride}"] * 2, [f"pair{stride}"], axis=1),
            helper.make_node("Reshape", [f"pair{stride}", "column"], [SCORE_NAMES[level]]),
            helper.make_node("Expand", ["box_d", f"shape4_{stride}"], [BOX_NAMES[level]]),
            helper.make_node("Expand", ["kps_d", f"shape10_{stride}"], [KPS_NAMES[level]]),
        ]
        inits += [
            const(f"shape4_{stride}", [2 * cells, 4], np.int64),
            const(f"shape10_{stride}", [2 * cells, 10], np.int64),
        ]
        outputs += [
            helper.make_tensor_value_info(SCORE_NAMES[level], TensorProto.FLOAT, [2 * cells, 1]),
            helper.make_tensor_value_info(BOX_NAMES[level], TensorProto.FLOAT, [2 * cells, 4]),
            helper.make_tensor_value_info(KPS_NAMES[level], TensorProto.FLOAT, [2 * cells, 10]),
        ]
    # Distances in strides of 8: the stride-16 and 32 cells never score, see the tests.
    inits += [
        const("column", [-1, 1], np.int64),
        const("box_d", [[FACE_SIDE / 2 / 8] * 4]),
        const("kps_d", [KPS_OFFSETS / 8]),
    ]
    # det_10g's own order: the three score outputs, then the boxes, then the keypoints.
    natural = [outputs[3 * level + kind] for kind in range(3) for level in range(3)]
    ordered = [natural[i] for i in output_order] if output_order else natural
    graph = helper.make_graph(
        nodes,
        "scrfd_standin",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 640, 640])],
        ordered,
        inits,
    )
    save(graph, path)


def arcface_standin(path: Path, *, batch: int | str = "None") -> None:
    """w600k_r50's interface: input.1 [N, 3, 112, 112] → 683 [N, 512]; the output is the
    crop's mean per channel (after the model's normalisation) times a fixed matrix, plus a
    bias: a deterministic function of exactly what the model was given."""
    nodes = [
        helper.make_node("ReduceMean", ["input.1"], ["means"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["means", "weights"], ["projected"]),
        helper.make_node("Add", ["projected", "bias"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface_standin",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [batch, 512])],
        [const("weights", EMBED_WEIGHTS), const("bias", EMBED_BIAS)],
    )
    save(graph, path)


def save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def expected_embedding(
    pixels: np.ndarray, landmarks: tuple[tuple[float, float], ...]
) -> np.ndarray:
    crop = align_face(pixels, np.array(landmarks, dtype=np.float32))
    assert crop is not None
    means = ((crop.astype(np.float32) - 127.5) / 127.5).mean(axis=(0, 1))  # RGB
    vector: np.ndarray = means @ EMBED_WEIGHTS + EMBED_BIAS
    unit: np.ndarray = vector / np.linalg.norm(vector)
    return unit


class SpySession:
    """Wraps an InferenceSession and records the batch of every run."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.batches: list[int] = []

    def get_inputs(self) -> Any:
        return self.session.get_inputs()

    def run(self, names: Any, feed: dict[str, np.ndarray]) -> Any:
        self.batches.append(len(next(iter(feed.values()))))
        return self.session.run(names, feed)


@pytest.fixture
def buffalo(tmp_path: Path) -> Path:
    scrfd_standin(tmp_path / "det_10g.onnx")
    arcface_standin(tmp_path / "w600k_r50.onnx")
    return tmp_path


def textured(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Reddish noise: every 8x8 cell averages near 127.5 over its three channels, which the
    detector's normalisation maps near 0, far below its score threshold; crops of it differ
    per position, and red and blue differ, so the embedding of a wrong crop, or of the crop
    in BGR, would not match."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 85, (height, width, 3))
    pixels: np.ndarray = (noise + np.array([128, 85, 43])).astype(np.uint8)
    return pixels


def square(pixels: np.ndarray, x: int, y: int, side: int, value: int) -> None:
    pixels[y : y + side, x : x + side] = value


def test_scrfd_decode_finds_each_bright_square_once_where_its_anchor_puts_it(
    buffalo: Path,
) -> None:
    analyzer = InsightFaceAnalyzer(buffalo)
    analyzer.load()
    pixels = textured(640, 480)
    square(pixels, 320, 240, 8, 255)  # stride-8 cell (40, 30): the anchor at (320, 240)
    square(pixels, 96, 64, 8, 230)  # cell (12, 8), dimmer
    (faces,) = analyzer.analyze([Image.fromarray(pixels)])
    assert len(faces) == 2  # two anchors per cell, one face each after NMS
    best, second = faces
    # Scores are the cell's normalised mean: (255 - 127.5) / 128 and (230 - 127.5) / 128.
    assert best.confidence == pytest.approx(127.5 / 128, abs=1e-4)
    assert second.confidence == pytest.approx(102.5 / 128, abs=1e-4)
    assert (best.box.x, best.box.y, best.box.width, best.box.height) == (288, 208, 64, 64)
    assert (second.box.x, second.box.y, second.box.width, second.box.height) == (64, 32, 64, 64)
    expected = ARCFACE_TEMPLATE / 112.0 * FACE_SIDE - FACE_SIDE / 2 + [320, 240]
    np.testing.assert_allclose(best.landmarks, expected, atol=1e-3)


def test_scrfd_boxes_come_back_in_the_pixels_of_a_larger_image(buffalo: Path) -> None:
    analyzer = InsightFaceAnalyzer(buffalo)
    pixels = textured(1280, 960)
    square(pixels, 640, 480, 16, 255)  # halved into the 640x640 input: cell (40, 30)
    (faces,) = analyzer.analyze([Image.fromarray(pixels)])
    assert len(faces) == 1
    face = faces[0]
    assert (face.box.x, face.box.y, face.box.width, face.box.height) == (576, 416, 128, 128)
    expected = (ARCFACE_TEMPLATE / 112.0 * FACE_SIDE - FACE_SIDE / 2 + [320, 240]) * 2
    np.testing.assert_allclose(face.landmarks, expected, atol=1e-3)


def test_scrfd_outputs_are_told_apart_by_shape_not_by_order(tmp_path: Path) -> None:
    scrfd_standin(tmp_path / "det_10g.onnx", output_order=[8, 0, 4, 2, 6, 1, 3, 7, 5])
    arcface_standin(tmp_path / "w600k_r50.onnx")
    pixels = textured(640, 480)
    square(pixels, 320, 240, 8, 255)
    (faces,) = InsightFaceAnalyzer(tmp_path).analyze([Image.fromarray(pixels)])
    assert [(f.box.x, f.box.y) for f in faces] == [(288, 208)]


def test_arcface_gets_the_aligned_normalised_rgb_crop_of_every_face(buffalo: Path) -> None:
    analyzer = InsightFaceAnalyzer(buffalo)
    pixels = textured(640, 480, seed=3)
    square(pixels, 320, 240, 8, 255)
    square(pixels, 96, 64, 8, 230)
    (faces,) = analyzer.analyze([Image.fromarray(pixels)])
    assert len(faces) == 2
    for face in faces:
        assert face.embedding.shape == (512,)
        np.testing.assert_allclose(
            face.embedding, expected_embedding(pixels, face.landmarks), atol=1e-5
        )
    # Swapping red and blue changes every embedding: the model is given RGB.
    swapped = expected_embedding(pixels[:, :, ::-1].copy(), faces[0].landmarks)
    assert float(swapped @ faces[0].embedding) < 0.999


def test_arcface_embeds_all_faces_of_all_images_in_as_few_calls_as_the_batch_allows(
    buffalo: Path,
) -> None:
    images = []
    for seed, places in enumerate([[(320, 240), (96, 64)], [(480, 160)], [(160, 400)]]):
        pixels = textured(640, 480, seed=seed)
        for x, y in places:
            square(pixels, x, y, 8, 255)
        images.append(pixels)
    analyzer = InsightFaceAnalyzer(buffalo, batch_size=32)
    analyzer.load()
    spy = SpySession(analyzer._embedder)
    analyzer._embedder = spy
    results = analyzer.analyze([Image.fromarray(p) for p in images])
    assert [len(faces) for faces in results] == [2, 1, 1]
    assert spy.batches == [4]
    small = InsightFaceAnalyzer(buffalo, batch_size=3)
    small.load()
    small_spy = SpySession(small._embedder)
    small._embedder = small_spy
    again = small.analyze([Image.fromarray(p) for p in images])
    assert small_spy.batches == [3, 1]
    for faces, same in zip(results, again, strict=True):
        for face, other in zip(faces, same, strict=True):
            np.testing.assert_allclose(face.embedding, other.embedding, atol=1e-6)


def test_an_arcface_export_with_a_fixed_batch_is_fed_full_batches(tmp_path: Path) -> None:
    scrfd_standin(tmp_path / "det_10g.onnx")
    arcface_standin(tmp_path / "w600k_r50.onnx", batch=4)
    pixels = textured(640, 480, seed=5)
    for x in (96, 256, 416):
        square(pixels, x, 200, 8, 255)
    analyzer = InsightFaceAnalyzer(tmp_path, batch_size=32)
    (faces,) = analyzer.analyze([Image.fromarray(pixels)])
    assert len(faces) == 3
    for face in faces:
        np.testing.assert_allclose(
            face.embedding, expected_embedding(pixels, face.landmarks), atol=1e-5
        )


def test_missing_or_foreign_production_models_fail_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"det_10g\.onnx"):
        InsightFaceAnalyzer(tmp_path).load()
    arcface_standin(tmp_path / "det_10g.onnx")  # one output, not SCRFD's nine
    arcface_standin(tmp_path / "w600k_r50.onnx")
    with pytest.raises(ValueError, match="9 outputs"):
        InsightFaceAnalyzer(tmp_path).load()
