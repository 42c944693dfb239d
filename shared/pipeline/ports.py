"""What the pipeline needs from generative models, as small Protocols (G4).

Two families implement them: the real providers through google-genai (Gemini text, Gemini
image, Veo), and the local provider, which needs no network and still makes real files (PNG
keyframes, H.264 MP4 clips, a stitched MP4), so the whole product runs offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field

AspectRatio = Literal["16:9", "9:16"]


class ShotType(StrEnum):
    WIDE = "wide"
    MEDIUM = "medium"
    CLOSE_UP = "close_up"
    OVER_THE_SHOULDER = "over_the_shoulder"
    INSERT = "insert"
    """A detail: an object or a prop fills the frame."""


class AssetBrief(BaseModel):
    """What the storyboard model is told about one asset of the manifest snapshot."""

    tag: str
    asset_type: str
    name: str
    reverse_prompt: str | None = None


class SceneDraft(BaseModel):
    """One scene as the storyboard model writes it (also the structured-output schema)."""

    title: str = Field(max_length=120)
    description: str
    shot_type: ShotType
    keyframe_prompt: str = Field(description="The first frame of the scene")
    end_keyframe_prompt: str = Field(description="The last frame of the scene")
    motion_prompt: str = Field(description="What moves between the two frames")
    asset_tags: list[str] = Field(
        default_factory=list, description="Tags of the manifest's assets that appear (CHAR_01 …)"
    )


class CharacterNote(BaseModel):
    tag: str | None = None
    name: str
    description: str


class StoryboardDraft(BaseModel):
    """The storyboard model's whole answer (structured output)."""

    title: str = Field(max_length=120)
    style_guide: str
    characters: list[CharacterNote] = Field(default_factory=list)
    scenes: list[SceneDraft]


@dataclass(frozen=True)
class StoryboardRequest:
    prompt: str
    style: str | None
    aspect_ratio: AspectRatio
    scene_count: int
    clip_seconds: int
    assets: list[AssetBrief] = field(default_factory=list)


@dataclass(frozen=True)
class Usage:
    """What a call consumed, for the cost ledger (G5)."""

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0
    video_seconds: float = 0.0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class ReferenceImage:
    tag: str
    data: bytes
    content_type: str


@dataclass(frozen=True)
class KeyframeRequest:
    prompt: str
    aspect_ratio: AspectRatio
    references: list[ReferenceImage] = field(default_factory=list)
    """At most 3, chosen by shot type (G3)."""
    seed: int | None = None


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    content_type: str
    usage: Usage


@dataclass(frozen=True)
class ClipRequest:
    prompt: str
    start_frame: bytes
    end_frame: bytes | None
    seconds: int
    aspect_ratio: AspectRatio
    audio: bool = False
    seed: int | None = None


@dataclass(frozen=True)
class ClipOperation:
    """A long-running clip generation: polled with delayed tasks, never waited on."""

    name: str
    done: bool = False
    video: bytes | None = None
    """MP4 bytes once done."""
    error: str | None = None
    usage: Usage | None = None


class TextModel(Protocol):
    name: str

    async def storyboard(self, request: StoryboardRequest) -> tuple[StoryboardDraft, Usage]: ...


class ImageModel(Protocol):
    name: str

    async def keyframe(self, request: KeyframeRequest) -> GeneratedImage: ...


class VideoModel(Protocol):
    name: str

    async def start_clip(self, request: ClipRequest) -> ClipOperation:
        """Starts a clip; a provider that is fast enough may answer it done at once."""
        ...

    async def poll_clip(self, operation: ClipOperation) -> ClipOperation: ...


class Stitcher(Protocol):
    def stitch(self, clips: list[Path], target: Path) -> None:
        """Joins the clip files, in order, into one MP4 at target. Files, not bytes: a video
        of many clips never has to be held in memory whole."""
        ...


class ProviderError(Exception):
    """A generation failed for good (after the provider's own retries), with the reason."""

    def __init__(self, message: str, *, scene: int | None = None) -> None:
        super().__init__(message)
        self.scene = scene
        """The scene it failed on, when the pipeline knows it."""
