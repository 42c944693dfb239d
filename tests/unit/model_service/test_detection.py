"""Object detection: YOLOv3-tiny on real photos, the ONNX YOLO code on small graphs built
here with the export's input and output, provider choice, and the class → asset mapping."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from model_service.backends import onnx_runtime
from model_service.backends.darknet_yolo import DarknetYoloDetector
from model_service.backends.mapping import (
    COCO_CLASSES,
    asset_type_for,
    canonical_class,
    free_fraction,
)
from model_service.backends.onnx_yolo import OnnxYoloDetector
from shared.manifesting.ports import Detection
from shared.models.assets import AssetType, BoundingBox

ROOT = Path(__file__).resolve().parents[3]
PHOTOS = ROOT / ".local" / "sample-photos"


# --- YOLOv3-tiny on real photos -----------------------------------------------------------


@pytest.fixture(scope="module")
def darknet() -> DarknetYoloDetector:
    detector = DarknetYoloDetector(batch_size=8)  # one forward pass for a whole test batch
    if not detector.available():
        pytest.skip(f"YOLOv3-tiny files not in {detector.model_dir}: run scripts/fetch_models")
    detector.load()
    return detector


def photo(name: str) -> Image.Image:
    path = PHOTOS / name
    if not path.is_file():
        pytest.skip(f"{path} missing: run scripts/sample_photos")
    return Image.open(path).convert("RGB")


def inside(detection: Detection, image: Image.Image) -> bool:
    box = detection.box
    return box.x + box.width <= image.width and box.y + box.height <= image.height


def test_yolov3_tiny_finds_the_bus_and_at_least_three_people_in_the_street_photo(
    darknet: DarknetYoloDetector,
) -> None:
    image = photo("bus.jpg")  # 810x1080: a bus across the frame, people in front of it
    (found,) = darknet.detect([image])
    buses = [d for d in found if d.class_name == "bus"]
    people = [d for d in found if d.class_name == "person"]
    assert len(buses) == 1
    bus = buses[0].box
    assert bus.width > 0.8 * image.width
    assert 150 < bus.y < 350 and 650 < bus.y + bus.height < 850
    assert len(people) >= 3
    for person in people:
        assert person.box.height > 1.5 * person.box.width  # standing people
        assert person.box.y + person.box.height > 0.7 * image.height  # feet on the street
    assert all(inside(d, image) for d in found)
    assert [d.confidence for d in found] == sorted((d.confidence for d in found), reverse=True)


def test_yolov3_tiny_finds_both_men_in_the_football_photo(darknet: DarknetYoloDetector) -> None:
    image = photo("zidane.jpg")  # 1280x720: one man left of centre, one on the right
    (found,) = darknet.detect([image])
    people = [d for d in found if d.class_name == "person" and d.confidence >= 0.5]
    assert len(people) >= 2
    centres = sorted(p.box.x + p.box.width / 2 for p in people)
    assert centres[0] < 0.5 * image.width < centres[-1]


def test_a_batch_of_two_photos_gives_what_each_photo_gives_alone(
    darknet: DarknetYoloDetector,
) -> None:
    images = [photo("bus.jpg"), photo("zidane.jpg")]
    batched = darknet.detect(images)
    alone = [darknet.detect([image])[0] for image in images]
    assert len(batched) == 2
    for together, single in zip(batched, alone, strict=True):
        assert [d.class_name for d in together] == [d.class_name for d in single]
        for a, b in zip(together, single, strict=True):
            assert a.confidence == pytest.approx(b.confidence, abs=1e-3)
            assert abs(a.box.x - b.box.x) <= 1 and abs(a.box.width - b.box.width) <= 1


def test_blank_images_give_no_detections(darknet: DarknetYoloDetector) -> None:
    blank = [Image.new("RGB", (640, 480), colour) for colour in ((0, 0, 0), (127, 127, 127))]
    assert darknet.detect(blank) == [[], []]
    assert darknet.detect([]) == []


def test_loading_twice_keeps_the_loaded_network(darknet: DarknetYoloDetector) -> None:
    network = darknet._net
    darknet.load()
    assert darknet._net is network


def test_missing_model_files_say_how_to_get_them(tmp_path: Path) -> None:
    detector = DarknetYoloDetector(tmp_path)
    assert not detector.available()
    with pytest.raises(FileNotFoundError, match="scripts/fetch_models"):
        detector.load()


# --- ONNX YOLO on graphs with the export's input and output -------------------------------

ANCHORS = 8400


def yolo_graph(
    anchors: list[tuple[float, float, float, float, int, float]],
    *,
    names: dict[int, str] | None = None,
    batch: int | str = "batch",
    classes: int = 80,
) -> bytes:
    """An ONNX model shaped like an ultralytics export: `images` [N, 3, 640, 640] in,
    `output0` [N, 4 + classes, 8400] out. Anchor i holds (cx, cy, w, h, class, score) from
    `anchors`; every score is multiplied by the red value of the input's centre pixel, so a
    white image shows the boxes at full score and a black one shows nothing."""
    boxes = np.zeros((1, 4, ANCHORS), np.float32)
    scores = np.zeros((1, classes, ANCHORS), np.float32)
    for i, (cx, cy, w, h, class_id, score) in enumerate(anchors):
        boxes[0, :, i] = (cx, cy, w, h)
        scores[0, class_id, i] = score
    int64 = np.int64
    nodes = [
        helper.make_node("Slice", ["images", "starts", "ends", "axes"], ["centre"]),
        helper.make_node("Reshape", ["centre", "gate_shape"], ["gate"]),
        helper.make_node("Mul", ["scores", "gate"], ["gated_scores"]),
        helper.make_node("Mul", ["gate", "zero"], ["no_gate"]),
        helper.make_node("Add", ["boxes", "no_gate"], ["batched_boxes"]),
        helper.make_node("Concat", ["batched_boxes", "gated_scores"], ["output0"], axis=1),
    ]
    initialisers = [
        numpy_helper.from_array(np.array([0, 0, 320, 320], int64), "starts"),
        numpy_helper.from_array(np.array([2**62, 1, 321, 321], int64), "ends"),
        numpy_helper.from_array(np.array([0, 1, 2, 3], int64), "axes"),
        numpy_helper.from_array(np.array([-1, 1, 1], int64), "gate_shape"),
        numpy_helper.from_array(np.array(0, np.float32), "zero"),
        numpy_helper.from_array(boxes, "boxes"),
        numpy_helper.from_array(scores, "scores"),
    ]
    graph = helper.make_graph(
        nodes,
        "yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 640, 640])],
        [
            helper.make_tensor_value_info(
                "output0", TensorProto.FLOAT, [batch, 4 + classes, ANCHORS]
            )
        ],
        initialisers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what the installed onnxruntime reads, whatever onnx writes
    if names is not None:
        helper.set_model_props(model, {"names": str(names), "imgsz": "[640, 640]"})
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


# In a 1280x640 image letterboxed into 640x640: scale 0.5, 160 px of padding above.
# The box x 200..600, y 100..500 of the image is x 100..300, y 210..410 of the input.
PERSON = (200.0, 310.0, 200.0, 200.0, 0, 0.9)
DUPLICATE = (204.0, 312.0, 200.0, 204.0, 0, 0.8)  # same person, a few pixels off
BUS_ON_IT = (200.0, 310.0, 200.0, 200.0, 5, 0.7)  # another class: not suppressed
FAINT = (500.0, 300.0, 50.0, 50.0, 2, 0.1)  # below the confidence threshold
ACROSS_EDGE = (600.0, 320.0, 100.0, 100.0, 7, 0.6)  # input x 550..650: past the image
ANCHOR_SET = [PERSON, DUPLICATE, BUS_ON_IT, FAINT, ACROSS_EDGE]
NAMES = {i: name for i, name in enumerate(COCO_CLASSES)} | {0: "hero"}


def summary(found: list[Detection]) -> list[tuple[str, float, tuple[int, int, int, int]]]:
    return [
        (d.class_name, round(d.confidence, 3), (d.box.x, d.box.y, d.box.width, d.box.height))
        for d in found
    ]


WIDE_WHITE = [
    ("hero", 0.9, (200, 100, 400, 400)),
    ("bus", 0.7, (200, 100, 400, 400)),
    ("truck", 0.6, (1100, 220, 180, 200)),  # clipped at the right edge, 1280
]


def test_onnx_yolo_decodes_letterboxed_boxes_back_to_a_wide_image_with_nms_per_class() -> None:
    detector = OnnxYoloDetector(yolo_graph(ANCHOR_SET, names=NAMES), name="test-yolo")
    (found,) = detector.detect([Image.new("RGB", (1280, 640), "white")])
    assert summary(found) == WIDE_WHITE
    assert detector.class_names[0] == "hero"  # from the model's metadata
    assert detector.input_hw == (640, 640)


def test_onnx_yolo_maps_boxes_back_through_side_padding_for_a_tall_image() -> None:
    detector = OnnxYoloDetector(yolo_graph(ANCHOR_SET, names=NAMES))
    (found,) = detector.detect([Image.new("RGB", (640, 1280), "white")])
    # Scale 0.5, 160 px of padding on the left: input x 100..300 is image x -120..280, and
    # the truck's input x 550..650 lies wholly in the right padding, so it is no detection.
    assert summary(found) == [
        ("hero", 0.9, (0, 420, 280, 400)),
        ("bus", 0.7, (0, 420, 280, 400)),
    ]


def test_onnx_yolo_runs_a_batch_image_by_image_in_its_results() -> None:
    detector = OnnxYoloDetector(yolo_graph(ANCHOR_SET, names=NAMES), batch_size=4)
    images = [
        Image.new("RGB", (1280, 640), "white"),
        Image.new("RGB", (1280, 640), "black"),
        Image.new("RGB", (640, 1280), "white"),
        Image.new("RGB", (1280, 640), (128, 128, 128)),  # scores halved: the faint one gone
        Image.new("L", (1280, 640), 255),  # grey-scale input is converted, not refused
    ]
    batched = detector.detect(images)
    alone = [detector.detect([image])[0] for image in images]
    assert [summary(found) for found in batched] == [summary(found) for found in alone]
    assert summary(batched[0]) == WIDE_WHITE
    assert batched[1] == []
    assert [(d.class_name, round(d.confidence, 2)) for d in batched[3]] == [
        ("hero", 0.45),
        ("bus", 0.35),
        ("truck", 0.3),
    ]
    assert summary(batched[4]) == WIDE_WHITE


def test_onnx_yolo_without_names_in_metadata_uses_coco_names_and_loads_from_a_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "yolo11n.onnx"
    path.write_bytes(yolo_graph(ANCHOR_SET))
    detector = OnnxYoloDetector(path)
    assert detector.name == "yolo11n-onnx"
    (found,) = detector.detect([Image.new("RGB", (1280, 640), "white")])
    assert [d.class_name for d in found] == ["person", "bus", "truck"]


def test_onnx_yolo_with_a_fixed_batch_of_one_runs_image_by_image() -> None:
    detector = OnnxYoloDetector(yolo_graph(ANCHOR_SET, names=NAMES, batch=1), batch_size=8)
    found = detector.detect([Image.new("RGB", (1280, 640), "white")] * 3)
    assert [summary(one) for one in found] == [WIDE_WHITE] * 3


def test_onnx_yolo_with_other_classes_names_them_by_number_without_metadata() -> None:
    detector = OnnxYoloDetector(yolo_graph([(200.0, 310.0, 200.0, 200.0, 2, 0.9)], classes=3))
    (found,) = detector.detect([Image.new("RGB", (1280, 640), "white")])
    assert summary(found) == [("class_2", 0.9, (200, 100, 400, 400))]


def test_a_missing_onnx_model_says_how_it_is_made(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="export_models"):
        OnnxYoloDetector(tmp_path / "absent.onnx").load()


# --- Execution providers --------------------------------------------------------------------


def test_the_best_available_provider_is_chosen_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    available = onnx_runtime.available_providers()
    expected = (
        "CUDAExecutionProvider"
        if "CUDAExecutionProvider" in available
        else "CPUExecutionProvider"  # this machine: the CPU build of onnxruntime
    )
    assert onnx_runtime.choose_providers()[0] == expected
    with caplog.at_level(logging.INFO, logger=onnx_runtime.__name__):
        session = onnx_runtime.create_session(yolo_graph([]))
    assert session.get_providers()[0] == expected
    assert f"on {expected}" in caplog.text


def test_providers_follow_the_preference_order_among_those_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert onnx_runtime.choose_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_runtime.choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_no_usable_provider_is_an_error_that_names_what_is_installed() -> None:
    with pytest.raises(RuntimeError, match="CPUExecutionProvider"):
        onnx_runtime.choose_providers(["NoSuchExecutionProvider"])


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider':UserWarning")
def test_a_session_that_silently_falls_back_to_the_cpu_is_logged_as_such(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if "CUDAExecutionProvider" in onnx_runtime.available_providers():
        pytest.skip("CUDA really is available here: nothing falls back")
    # Claim CUDA is there, as a GPU build without its CUDA libraries does.
    monkeypatch.setattr(
        onnx_runtime,
        "available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    with caplog.at_level(logging.INFO, logger=onnx_runtime.__name__):
        session = onnx_runtime.create_session(yolo_graph([]))
    assert session.get_providers()[0] == "CPUExecutionProvider"
    assert "asked for CUDAExecutionProvider but runs on CPUExecutionProvider" in caplog.text


def test_session_threads_come_from_the_argument_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(onnx_runtime.THREADS_ENV, raising=False)
    assert onnx_runtime.session_options().intra_op_num_threads == 0  # onnxruntime decides
    monkeypatch.setenv(onnx_runtime.THREADS_ENV, "1")
    assert onnx_runtime.session_options().intra_op_num_threads == 1
    assert onnx_runtime.session_options(threads=2).intra_op_num_threads == 2
    monkeypatch.setenv(onnx_runtime.THREADS_ENV, "many")
    with pytest.raises(ValueError, match=onnx_runtime.THREADS_ENV):
        onnx_runtime.session_options()


# --- Classes to asset types, free frame -----------------------------------------------------


@pytest.mark.parametrize(
    ("class_name", "asset_type"),
    [
        ("person", AssetType.CHARACTER),
        ("car", AssetType.VEHICLE),
        ("motorbike", AssetType.VEHICLE),  # Darknet's spelling
        ("airplane", AssetType.VEHICLE),
        ("boat", AssetType.VEHICLE),
        ("sofa", AssetType.PROP),
        ("dining table", AssetType.PROP),
        ("bench", AssetType.PROP),
        ("pottedplant", AssetType.PROP),
        ("cup", AssetType.OBJECT),
        ("tvmonitor", AssetType.OBJECT),
        ("traffic light", AssetType.OBJECT),
        ("dog", AssetType.OBJECT),
    ],
)
def test_detected_classes_map_to_asset_types(class_name: str, asset_type: AssetType) -> None:
    assert asset_type_for(class_name) == asset_type


def test_darknet_class_names_are_the_coco_classes_in_the_same_order(
    darknet: DarknetYoloDetector,
) -> None:
    assert tuple(canonical_class(name) for name in darknet.class_names) == COCO_CLASSES


def detection(x: int, y: int, width: int, height: int) -> Detection:
    return Detection("thing", 0.9, BoundingBox(x=x, y=y, width=width, height=height))


def test_free_fraction_is_the_share_of_the_frame_no_box_covers() -> None:
    assert free_fraction([], 640, 480) == 1.0
    assert free_fraction([detection(0, 0, 320, 480)], 640, 480) == pytest.approx(0.5)
    # Two overlapping boxes count their overlap once: 100x100 + 100x100 - 50x50.
    two = [detection(0, 0, 100, 100), detection(50, 50, 100, 100)]
    assert free_fraction(two, 1000, 200) == pytest.approx(1 - 17_500 / 200_000)
    assert free_fraction([detection(0, 0, 640, 480)], 640, 480) == 0.0
    assert free_fraction([BoundingBox(x=0, y=0, width=160, height=480)], 640, 480) == 0.75
    assert free_fraction([detection(600, 400, 100, 100)], 640, 480) == pytest.approx(
        1 - 40 * 80 / (640 * 480)  # only the part inside the frame counts
    )


def test_free_fraction_matches_a_pixel_mask_for_many_random_boxes() -> None:
    rng = np.random.default_rng(7)
    width, height = 317, 211
    for _ in range(20):
        boxes = []
        mask = np.zeros((height, width), bool)
        for _ in range(int(rng.integers(1, 12))):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            w, h = int(rng.integers(1, width)), int(rng.integers(1, height))
            boxes.append(detection(x, y, w, h))
            mask[y : y + h, x : x + w] = True
        assert free_fraction(boxes, width, height) == pytest.approx(1 - mask.mean())
