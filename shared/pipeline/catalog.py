"""The models a project may use, with what each allows (G1) and costs (G5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args


@dataclass(frozen=True)
class VideoModelSpec:
    name: str
    clip_seconds: tuple[int, ...]
    """Clip durations the model accepts."""
    audio: bool
    end_frame: bool
    """Whether it takes a last frame to move to."""
    max_total_seconds: int = 240


TextModelName = Literal["gemini-2.5-pro", "gemini-2.5-flash", "local-storyboard-1"]
ImageModelName = Literal["gemini-2.5-flash-image", "local-keyframe-1"]
VideoModelName = Literal[
    "veo-3.0-generate-001", "veo-3.0-fast-generate-001", "veo-2.0-generate-001", "local-clip-1"
]
TEXT_MODELS: tuple[str, ...] = get_args(TextModelName)
IMAGE_MODELS: tuple[str, ...] = get_args(ImageModelName)
VIDEO_MODELS: dict[str, VideoModelSpec] = {
    spec.name: spec
    for spec in (
        VideoModelSpec("veo-3.0-generate-001", (4, 6, 8), audio=True, end_frame=False),
        VideoModelSpec("veo-3.0-fast-generate-001", (4, 6, 8), audio=True, end_frame=False),
        VideoModelSpec("veo-2.0-generate-001", (5, 6, 7, 8), audio=False, end_frame=True),
        VideoModelSpec("local-clip-1", (2, 3, 4, 5, 6, 8), audio=True, end_frame=True),
    )
}
LOCAL_MODELS = {"text": "local-storyboard-1", "image": "local-keyframe-1", "video": "local-clip-1"}
MAX_SCENES = 30
assert set(VIDEO_MODELS) == set(get_args(VideoModelName)), "the catalog and its names differ"
