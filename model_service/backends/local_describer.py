"""The offline describer: reverse prompts assembled from what can be measured in the pixels.

It needs no network and no model, so the local stack and the tests describe every asset. It
claims nothing it did not measure: the asset type and the engine's hints (detected class,
whether a face was found, the user's name), the dominant colours named from a small palette,
brightness and contrast, size and aspect, and sharpness. Its results are marked `is_local`,
so they are never mistaken for a vision model's.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from shared.manifesting.ports import (
    DescribeRequest,
    DescriberError,
    Description,
    DescriptionResult,
)
from shared.models.assets import AssetType

MODEL_NAME = "local-describer-1"

# Hint keys read from a DescribeRequest, each with the spellings accepted for it (the ports
# do not fix them; the engine sends the short ones).
HINT_DETECTED_CLASS = ("detected", "detected_class")
HINT_FACE_FOUND = ("face", "face_found")
HINT_NAME = ("name",)


def hint(hints: Mapping[str, str], keys: tuple[str, ...]) -> str:
    """The first non-blank value among a hint's spellings, stripped; "" when absent."""
    for key in keys:
        value = hints.get(key, "").strip()
        if value:
            return value
    return ""


# Named colours matched in CIELAB, where distance follows perceived difference far better than
# in RGB (a dark red is nearer red than brown there).
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "dark grey": (70, 70, 70),
    "grey": (128, 128, 128),
    "light grey": (190, 190, 190),
    "white": (245, 245, 245),
    "red": (200, 30, 35),
    "dark red": (115, 20, 25),
    "orange": (240, 135, 30),
    "yellow": (240, 215, 40),
    "beige": (215, 195, 160),
    "brown": (115, 70, 40),
    "olive": (115, 115, 40),
    "green": (55, 160, 60),
    "dark green": (25, 80, 35),
    "teal": (30, 128, 128),
    "light blue": (140, 195, 235),
    "blue": (40, 80, 200),
    "navy": (25, 35, 90),
    "purple": (120, 50, 150),
    "pink": (240, 140, 180),
}

_COLOUR_SAMPLE_SIDE = 96  # colours of a thumbnail are those of the image, at 1% of the cost
_SHARPNESS_SIDE = 512  # a fixed working size makes sharpness comparable across uploads
_MIN_COLOUR_SHARE = 0.08
_QUANTISED_COLOURS = 8

_TYPE_NOUNS: dict[AssetType, str] = {
    AssetType.CHARACTER: "character",
    AssetType.OBJECT: "object",
    AssetType.PROP: "prop",
    AssetType.VEHICLE: "vehicle",
    AssetType.ENVIRONMENT: "environment",
    AssetType.STYLE: "style",
    AssetType.OTHER: "subject",
}

_COMMON_RATIOS = {
    "1:1": 1.0,
    "4:3": 4 / 3,
    "3:4": 3 / 4,
    "3:2": 3 / 2,
    "2:3": 2 / 3,
    "16:9": 16 / 9,
    "9:16": 9 / 16,
    "21:9": 21 / 9,
    "5:4": 5 / 4,
    "4:5": 4 / 5,
}


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB colours given as (..., 3) values in 0-255."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
    )
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


_PALETTE_NAMES = list(PALETTE)
_PALETTE_LAB = _srgb_to_lab(np.array([PALETTE[name] for name in _PALETTE_NAMES]))


def colour_name(rgb: tuple[int, int, int]) -> str:
    """The palette name nearest to an sRGB colour."""
    lab = _srgb_to_lab(np.array(rgb))
    return _PALETTE_NAMES[int(np.argmin(np.linalg.norm(_PALETTE_LAB - lab, axis=1)))]


@dataclass(frozen=True)
class Measurements:
    width: int
    height: int
    colours: tuple[tuple[str, float], ...]
    """Named dominant colours with their share of the image, largest first."""
    brightness: float
    """Mean luminance, 0 (black) to 1 (white)."""
    contrast: float
    """Standard deviation of luminance, 0 to 0.5."""
    sharpness: float
    """Variance of the Laplacian of the luminance at a fixed working size."""
    quality_score: float
    """0-10, from sharpness (mostly) and resolution."""

    @property
    def orientation(self) -> str:
        if abs(self.width - self.height) <= 0.02 * max(self.width, self.height):
            return "square"
        return "landscape" if self.width > self.height else "portrait"

    @property
    def aspect(self) -> str:
        ratio = self.width / self.height
        for name, value in _COMMON_RATIOS.items():
            if abs(ratio / value - 1) <= 0.02:
                return name
        return f"{ratio:.2f}:1"

    @property
    def sharpness_label(self) -> str:
        if self.sharpness >= 300:
            return "sharp"
        return "slightly soft" if self.sharpness >= 60 else "blurry"

    @property
    def lighting_label(self) -> str:
        if self.brightness < 0.25:
            tone = "dark"
        elif self.brightness < 0.45:
            tone = "dim"
        elif self.brightness > 0.75:
            tone = "bright"
        else:
            tone = "evenly lit"
        if self.contrast < 0.08:
            return f"{tone}, low contrast"
        return f"{tone}, high contrast" if self.contrast > 0.25 else tone


def _dominant_colours(rgb: Image.Image) -> tuple[tuple[str, float], ...]:
    sample = rgb.copy()
    sample.thumbnail((_COLOUR_SAMPLE_SIDE, _COLOUR_SAMPLE_SIDE), Image.Resampling.BILINEAR)
    # Median cut is deterministic (k-means from random seeds is not) and keeps small but
    # distinct regions as their own colour.
    quantised = sample.quantize(colors=_QUANTISED_COLOURS, method=Image.Quantize.MEDIANCUT)
    palette = quantised.getpalette() or []
    counts = quantised.getcolors() or []
    total = sum(count for count, _ in counts)
    shares: dict[str, float] = {}
    for count, index in counts:
        assert isinstance(index, int)  # a palette image counts palette indices
        r, g, b = palette[3 * index : 3 * index + 3]
        name = colour_name((r, g, b))
        shares[name] = shares.get(name, 0.0) + count / total
    ranked = sorted(shares.items(), key=lambda item: (-item[1], item[0]))
    kept = tuple((name, share) for name, share in ranked if share >= _MIN_COLOUR_SHARE)
    return kept[:3] or tuple(ranked[:1])


def _laplacian_variance(grey: np.ndarray) -> float:
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    lap = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float(lap.var())


def quality_from(sharpness: float, width: int, height: int) -> float:
    """0-10: 7 points for sharpness (log scale, blur at a variance of 10, crisp at 1000) and 3
    for resolution (nothing under 128 px on the short side, full from 768 px)."""
    sharp = min(1.0, max(0.0, (math.log10(sharpness + 1) - 1) / 2))
    size = min(1.0, max(0.0, (min(width, height) - 128) / (768 - 128)))
    return round(10 * (0.7 * sharp + 0.3 * size), 1)


def measure(image: Image.Image) -> Measurements:
    """What the describer knows about an image; raises DescriberError if it cannot be read."""
    try:
        rgb = image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise DescriberError(f"the image could not be read: {exc}") from exc
    width, height = rgb.size
    if width == 0 or height == 0:
        raise DescriberError("the image is empty")
    work = rgb.copy()
    work.thumbnail((_SHARPNESS_SIDE, _SHARPNESS_SIDE), Image.Resampling.LANCZOS)
    grey = np.asarray(work.convert("L"), dtype=np.float64)
    sharpness = _laplacian_variance(grey)
    return Measurements(
        width=width,
        height=height,
        colours=_dominant_colours(rgb),
        brightness=float(grey.mean() / 255),
        contrast=float(grey.std() / 255),
        sharpness=sharpness,
        quality_score=quality_from(sharpness, width, height),
    )


def _colour_list(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _face_found(hints: Mapping[str, str]) -> bool | None:
    value = hint(hints, HINT_FACE_FOUND).lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    return None


def compose(asset_type: AssetType, hints: Mapping[str, str], m: Measurements) -> Description:
    """A Description that states the measurements and hints, and nothing else."""
    noun = _TYPE_NOUNS[asset_type]
    detected = hint(hints, HINT_DETECTED_CLASS)
    user_name = hint(hints, HINT_NAME)
    face = _face_found(hints)
    colours = [name for name, _ in m.colours]
    palette = _colour_list(colours)

    if asset_type is AssetType.STYLE:
        subject = "visual style"
    elif asset_type is AssetType.ENVIRONMENT:
        subject = f"{detected} scene" if detected else "scene"
    else:
        subject = detected or noun
    if user_name:
        subject = f"{subject} named {user_name}"
    if face:
        subject += ", face clearly visible"
    prompt = (
        f"{asset_type.value.lower()} reference: {subject}; dominant colours {palette}; "
        f"{m.lighting_label} lighting; {m.orientation} framing ({m.aspect}); "
        f"{m.sharpness_label} focus"
    )

    facts = [f"type {asset_type.value}"]
    if detected:
        facts.append(f"detected as {detected}")
    if face is not None:
        facts.append("a face was found" if face else "no face was found")
    if user_name:
        facts.append(f"named {user_name!r} by the user")
    shares = ", ".join(f"{name} {share:.0%}" for name, share in m.colours)
    visual = (
        f"Measured locally, without a vision model: a {m.width}×{m.height} {m.orientation} "
        f"image ({m.aspect}); dominant colours {shares}; mean brightness {m.brightness:.0%}, "
        f"contrast {m.contrast:.0%} ({m.lighting_label}); sharpness {m.sharpness:.0f} "
        f"({m.sharpness_label}). Known: {'; '.join(facts)}."
    )

    if user_name:
        name = user_name
    else:
        thing = detected if detected and asset_type is not AssetType.STYLE else noun
        name = f"{colours[0]} {thing}".title() if colours else thing.title()
    return Description(
        reverse_prompt=prompt,
        visual_description=visual,
        quality_score=m.quality_score,
        suggested_name=name[:80],
    )


class LocalDescriber:
    """Describer that needs no network: see the module docstring."""

    name = MODEL_NAME

    def load(self) -> None:
        """Nothing to load; here so every backend is started the same way."""

    def describe_sync(self, request: DescribeRequest) -> DescriptionResult:
        measurements = measure(request.image)
        return DescriptionResult(
            description=compose(request.asset_type, request.hints, measurements),
            model=MODEL_NAME,
            cost_usd=0.0,
            is_local=True,
        )

    async def describe(self, request: DescribeRequest) -> DescriptionResult:
        # Decoding and resizing a large upload takes tens of milliseconds: off the event loop.
        return await asyncio.to_thread(self.describe_sync, request)
