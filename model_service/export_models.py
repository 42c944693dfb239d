"""Production model files, made where weights can be downloaded (the GPU image build).

    python -m model_service.export_models [--out .models/production] [--yolo yolo11n.pt]

writes `<out>/yolo11n.onnx` (ultralytics' export: input `images` [N, 3, 640, 640], output
`output0` [N, 84, 8400], class names in its metadata; dynamic batch, so the detector batches)
and `<out>/buffalo_l/` (insightface's SCRFD detector and ArcFace recogniser as ONNX files).
Needs `pip install ultralytics insightface` (and torch for the export) in that build step
only: the service itself runs the files on onnxruntime and never imports either package,
and nothing downloads weights at request time.

Licences: ultralytics YOLO is AGPL-3.0 and insightface's pretrained models are for
non-commercial research; the backends are pluggable so either can be replaced.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path


def export_yolo(out: Path, weights: str = "yolo11n.pt", imgsz: int = 640) -> Path:
    """Export an ultralytics YOLO checkpoint (downloaded by name if absent) to ONNX."""
    from ultralytics import YOLO  # build-time only: AGPL, torch, several GB

    exported = Path(YOLO(weights).export(format="onnx", imgsz=imgsz, dynamic=True, simplify=True))
    target = out / exported.name
    out.mkdir(parents=True, exist_ok=True)
    shutil.move(str(exported), target)
    return target


def fetch_buffalo_l(out: Path, pack: str = "buffalo_l") -> Path:
    """Download insightface's model pack and keep its ONNX files, flat, in `out/pack`."""
    from insightface.utils import ensure_available  # build-time only

    target = out / pack
    with tempfile.TemporaryDirectory() as scratch:
        unpacked = Path(ensure_available("models", pack, root=scratch))
        # Some releases unzip into a nested folder of the same name: keep only the files.
        files = sorted(unpacked.rglob("*.onnx"))
        if not files:
            raise RuntimeError(f"no ONNX files in insightface pack {pack!r} at {unpacked}")
        target.mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copy2(file, target / file.name)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(".models/production"))
    parser.add_argument("--yolo", default="yolo11n.pt", help="ultralytics checkpoint name")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--skip-yolo", action="store_true")
    parser.add_argument("--skip-faces", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_yolo:
        print(f"export_models: {export_yolo(args.out, args.yolo, args.imgsz)}")
    if not args.skip_faces:
        print(f"export_models: {fetch_buffalo_l(args.out)}")


if __name__ == "__main__":
    main()
