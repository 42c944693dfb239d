"""The local provider (G4): every generation port implemented offline, making real files.

- `LocalTextModel`: a deterministic storyboard from the prompt and the manifest's assets.
- `LocalImageModel`: PNG keyframes composed from the reference crops and the scene text.
- `LocalVideoModel`: H.264 MP4 clips moving from the start keyframe to the end keyframe.
- `LocalStitcher`: one MP4 of the clips, by stream copy where the clips allow it.

It is the local stack's default and what the pipeline's tests run on; no call leaves the
machine, and none costs anything.
"""

from __future__ import annotations

from shared.pipeline.local_keyframe import LocalImageModel, frame_size, shot_type_of
from shared.pipeline.local_storyboard import LocalTextModel, write_storyboard
from shared.pipeline.local_video import LocalStitcher, LocalVideoModel

__all__ = [
    "LocalImageModel",
    "LocalStitcher",
    "LocalTextModel",
    "LocalVideoModel",
    "frame_size",
    "shot_type_of",
    "write_storyboard",
]
