"""The ffmpeg binary the local provider renders with, and a probe that reads what a file holds.

The binary comes from the imageio-ffmpeg wheel (a static build with libx264 and AAC), so the
local provider needs nothing installed on the machine. The probe parses `ffmpeg -i` rather
than calling ffprobe because the wheel carries ffmpeg alone.
"""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import imageio_ffmpeg  # type: ignore[import-untyped]

from shared.pipeline.ports import ProviderError

_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM = re.compile(r"Stream #\d+:\d+.*?: (Video|Audio): (.*)")
_SIZE = re.compile(r"^(\d+)x(\d+)")
_FPS = re.compile(r"^(\d+(?:\.\d+)?) fps$")
_RATE = re.compile(r"^(\d+) Hz$")


@functools.cache
def ffmpeg_exe() -> str:
    exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


@dataclass(frozen=True)
class MediaInfo:
    duration: float
    video_codec: str | None = None
    pix_fmt: str | None = None
    width: int = 0
    height: int = 0
    fps: float = 0.0
    audio_codec: str | None = None
    sample_rate: int = 0
    channels: str | None = None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    def stream_signature(self) -> tuple[object, ...]:
        """What must match for files to be joined without re-encoding."""
        return (
            self.video_codec,
            self.pix_fmt,
            self.width,
            self.height,
            self.fps,
            self.audio_codec,
            self.sample_rate,
            self.channels,
        )


def run_ffmpeg(args: Sequence[str], *, what: str, timeout: float = 300.0) -> None:
    """Runs ffmpeg quietly; a failure becomes a ProviderError carrying ffmpeg's own reason."""
    try:
        done = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ProviderError(f"{what}: ffmpeg ran past {timeout:.0f} s") from error
    if done.returncode != 0:
        raise ProviderError(f"{what}: ffmpeg failed: {tail(done.stderr)}")


def tail(stderr: bytes, limit: int = 600) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    return text[-limit:] or "no message"


def probe(path: Path) -> MediaInfo:
    """The container duration and the first video and audio stream of a media file."""
    # Without an output ffmpeg exits with 1 after printing the input's description.
    done = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return parse_probe(done.stderr.decode("utf-8", "replace"))


def parse_probe(text: str) -> MediaInfo:
    duration = _DURATION.search(text)
    if duration is None:
        raise ProviderError(f"not a readable media file: {text.strip()[-300:] or 'no message'}")
    hours, minutes, seconds = duration.groups()
    info = MediaInfo(duration=int(hours) * 3600 + int(minutes) * 60 + float(seconds))
    for kind, description in _STREAM.findall(text):
        parts = _split_top_level(description)
        codec = parts[0].split()[0]
        if kind == "Video" and info.video_codec is None:
            info = replace(info, video_codec=codec)
            if len(parts) > 1:
                info = replace(info, pix_fmt=parts[1].split("(")[0].strip())
            for part in parts[1:]:
                if size := _SIZE.match(part):
                    info = replace(info, width=int(size[1]), height=int(size[2]))
                elif fps := _FPS.match(part):
                    info = replace(info, fps=float(fps[1]))
        elif kind == "Audio" and info.audio_codec is None:
            info = replace(info, audio_codec=codec)
            for part in parts[1:]:
                if rate := _RATE.match(part):
                    info = replace(info, sample_rate=int(rate[1]))
                elif part in {"mono", "stereo"} and info.channels is None:
                    info = replace(info, channels=part)
    return info


def _split_top_level(description: str) -> list[str]:
    """Splits a stream description at the commas outside parentheses: "yuv420p(tv, bt709)"
    is one part."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in description:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts
