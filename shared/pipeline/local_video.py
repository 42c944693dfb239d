"""The local clip model and stitcher: real H.264 MP4s made with ffmpeg, with no network.

A clip moves from the start keyframe to the end keyframe: the start frame slowly zooms in and
drifts while the end frame, zoomed the same amount, settles back to its own framing, and the two
cross-fade in the middle. The first and last frames of a clip are the keyframes themselves, so
stitched scenes meet where the storyboard said they would.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import subprocess
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared.pipeline.local_ffmpeg import MediaInfo, ffmpeg_exe, probe, run_ffmpeg, tail
from shared.pipeline.ports import ClipOperation, ClipRequest, ProviderError, Usage

FPS = 24
ZOOM = 0.10
"""How far the Ken Burns move zooms in: 10% reads as motion without losing the framing."""
FADE_START, FADE_END = 0.25, 0.75
"""The part of the clip, as fractions of its length, in which the frames cross-fade."""
SAMPLE_RATE = 48_000
FRAME_WORKERS = 2
MAX_SECONDS = 60

# Baseline-compatible H.264 in yuv420p with BT.709 tags: what every player and browser decodes.
_VIDEO_CODEC = [
    "-c:v", "libx264",
    "-pix_fmt", "yuv420p",
    "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
    "-color_range", "tv",
]  # fmt: skip


class LocalVideoModel:
    """Renders a clip at once and answers its operation done; polling returns it unchanged.

    A clip takes about a third of its length to render at 1280×720 on two cores and a tenth
    at 640×360: the clip is as large as its start frame. A failed render is a done operation
    with its error, as a remote model reports one.
    """

    name = "local-clip-1"
    max_concurrency = os.cpu_count() or 1
    """CPU work (PIL, ffmpeg): more at once than there are cores only queues it."""

    def __init__(self, *, preset: str = "superfast", crf: int = 23) -> None:
        self.preset = preset
        self.crf = crf

    async def start_clip(self, request: ClipRequest) -> ClipOperation:
        name = f"operations/{self.name}-{_request_digest(request)[:20]}"
        try:
            # Seconds of CPU work: off the event loop, so other requests keep being served.
            video = await asyncio.to_thread(self.render, request)
        except ProviderError as error:
            return ClipOperation(name=name, done=True, error=str(error))
        usage = Usage(model=self.name, video_seconds=float(request.seconds))
        return ClipOperation(name=name, done=True, video=video, usage=usage)

    async def poll_clip(self, operation: ClipOperation) -> ClipOperation:
        return operation

    def render(self, request: ClipRequest) -> bytes:
        if not 1 <= request.seconds <= MAX_SECONDS:
            raise ProviderError(f"a clip lasts 1 to {MAX_SECONDS} seconds, not {request.seconds}")
        start = _decode(request.start_frame, "start frame")
        # H.264 in yuv420p needs even sides.
        size = (start.width - start.width % 2, start.height - start.height % 2)
        if min(size) < 2:
            raise ProviderError("the start frame is too small for a video")
        start = start.crop((0, 0, *size))
        end = _decode(request.end_frame, "end frame") if request.end_frame else None
        if end is not None and end.size != size:
            end = end.resize(size, Image.Resampling.BILINEAR)
        digest = _request_digest(request)
        with tempfile.TemporaryDirectory(prefix="local-clip-") as folder:
            target = Path(folder) / "clip.mp4"
            command = [
                ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{size[0]}x{size[1]}",
                "-framerate", str(FPS), "-color_range", "tv", "-colorspace", "bt709",
                "-i", "pipe:0",
            ]  # fmt: skip
            if request.audio:
                command += [
                    "-f", "lavfi",
                    "-i", f"anullsrc=channel_layout=stereo:sample_rate={SAMPLE_RATE}",
                    "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-b:a", "64k",
                ]  # fmt: skip
            command += [
                *_VIDEO_CODEC, "-preset", self.preset, "-crf", str(self.crf),
                "-t", str(request.seconds), "-movflags", "+faststart", str(target),
            ]  # fmt: skip
            _encode(command, _ken_burns(start, end, request.seconds, digest))
            return target.read_bytes()


def _decode(data: bytes | None, what: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data or b""))
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ProviderError(f"the {what} is not a readable image") from error


def _request_digest(request: ClipRequest) -> str:
    hasher = hashlib.sha256()
    for part in (
        request.prompt.encode(),
        request.start_frame,
        request.end_frame or b"",
        f"{request.seconds}|{request.aspect_ratio}|{request.audio}|{request.seed}".encode(),
    ):
        hasher.update(hashlib.sha256(part).digest())
    return hasher.hexdigest()


class _Planes:
    """A frame as yuv420p planes (BT.709, limited range), the layout the encoder takes.

    Moving planes instead of RGB images means one byte a pixel for luma and a quarter of that
    for each chroma plane where Pillow's RGB carries four, and ffmpeg converts nothing.
    """

    def __init__(self, image: Image.Image) -> None:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
        luma = rgb @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
        blue = (rgb[..., 2] - luma) / 1.8556
        red = (rgb[..., 0] - luma) / 1.5748
        width, height = image.size
        self.size = (width, height)
        self.y = _plane(16 + 219 * luma)
        half = (width // 2, height // 2)
        self.u = _plane(128 + 224 * blue).resize(half, Image.Resampling.BOX)
        self.v = _plane(128 + 224 * red).resize(half, Image.Resampling.BOX)

    def view(self, progress: float, toward: tuple[float, float]) -> tuple[Image.Image, ...]:
        """Progress 0 shows the whole frame, 1 the zoomed-in window placed at `toward`."""
        width, height = self.size
        zoom = 1 + ZOOM * progress
        window_w, window_h = width / zoom, height / zoom
        left = (width - window_w) * (0.5 + (toward[0] - 0.5) * progress)
        top = (height - window_h) * (0.5 + (toward[1] - 0.5) * progress)
        box = (left, top, left + window_w, top + window_h)
        half_box = (left / 2, top / 2, (left + window_w) / 2, (top + window_h) / 2)
        bilinear = Image.Resampling.BILINEAR
        return (
            self.y.resize(self.y.size, bilinear, box=box),
            self.u.resize(self.u.size, bilinear, box=half_box),
            self.v.resize(self.v.size, bilinear, box=half_box),
        )


def _plane(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def _ken_burns(
    start: Image.Image, end: Image.Image | None, seconds: int, digest: str
) -> Iterator[bytes]:
    """yuv420p frames: the start frame zooms toward a corner picked by the digest, the end frame
    comes back from the same zoom toward its own framing, and they cross-fade in between."""
    first = _Planes(start)
    last = _Planes(end) if end is not None else None
    count = FPS * seconds
    toward = (int(digest[0:2], 16) / 255, int(digest[2:4], 16) / 255)
    back = (1 - toward[0], 1 - toward[1])

    def frame(index: int) -> bytes:
        t = index / max(1, count - 1)
        eased = _smooth(t)
        fade = 0.0 if last is None else _smooth((t - FADE_START) / (FADE_END - FADE_START))
        if last is None or fade <= 0.0:
            planes = first.view(eased, toward)
        elif fade >= 1.0:
            planes = last.view(1 - eased, back)
        else:
            planes = tuple(
                Image.blend(a, b, fade)
                for a, b in zip(first.view(eased, toward), last.view(1 - eased, back), strict=True)
            )
        return b"".join(plane.tobytes() for plane in planes)

    # Pillow lets go of the GIL while it resamples: two workers keep both cores busy beside
    # ffmpeg. A short window of frames in flight bounds the memory.
    with ThreadPoolExecutor(max_workers=FRAME_WORKERS) as pool:
        pending: deque[Future[bytes]] = deque()
        for index in range(count):
            pending.append(pool.submit(frame, index))
            if len(pending) > FRAME_WORKERS * 2:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _smooth(t: float) -> float:
    t = min(1.0, max(0.0, t))
    return t * t * (3 - 2 * t)


def _encode(command: list[str], frames: Iterator[bytes]) -> None:
    # stderr goes to a file: a pipe nobody reads while frames are written can fill and stall.
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=errors, bufsize=0)
        assert process.stdin is not None
        try:
            for frame in frames:
                process.stdin.write(frame)
        except BrokenPipeError:
            pass  # ffmpeg stopped early; its exit status and message say why
        except BaseException:
            process.kill()  # never leave an encoder behind a failed render
            process.wait()
            raise
        finally:
            process.stdin.close()
        try:
            code = process.wait(timeout=300)
        except subprocess.TimeoutExpired as error:
            process.kill()
            process.wait()
            raise ProviderError("clip: ffmpeg ran past 300 s") from error
        if code != 0:
            errors.seek(0)
            raise ProviderError(f"clip: ffmpeg failed: {tail(errors.read())}")


class LocalStitcher:
    """Joins clips into one MP4: stream copy through the concat demuxer when every clip has
    the same streams, a single re-encode to the first clip's size otherwise."""

    def __init__(self, *, preset: str = "veryfast", crf: int = 21) -> None:
        self.preset = preset
        self.crf = crf

    def stitch(self, clips: list[Path], target: Path) -> None:
        if not clips:
            raise ProviderError("stitch: no clips")
        infos = [probe(path) for path in clips]
        for number, info in enumerate(infos):
            if info.video_codec is None:
                raise ProviderError(f"stitch: clip {number + 1} has no video stream")
        if len({info.stream_signature() for info in infos}) == 1:
            with tempfile.TemporaryDirectory(prefix="local-stitch-") as folder:
                self._copy(clips, Path(folder) / "clips.txt", target)
        else:
            self._reencode(clips, infos, target)

    def _copy(self, paths: list[Path], listing: Path, target: Path) -> None:
        listing.write_text("".join(f"file '{path.resolve()}'\n" for path in paths))
        run_ffmpeg(
            ["-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
             "-movflags", "+faststart", str(target)],
            what="stitch",
        )  # fmt: skip

    def _reencode(self, paths: list[Path], infos: list[MediaInfo], target: Path) -> None:
        width, height = infos[0].width, infos[0].height
        audio = any(info.has_audio for info in infos)
        inputs: list[str] = []
        graph: list[str] = []
        joined = ""
        for number, (path, info) in enumerate(zip(paths, infos, strict=True)):
            inputs += ["-i", str(path)]
            # Letterboxed into the first clip's frame: a clip of another aspect keeps its shape.
            graph.append(
                f"[{number}:v]scale={width}:{height}:force_original_aspect_ratio=decrease,"
                f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={FPS},format=yuv420p"
                f"[v{number}]"
            )
            joined += f"[v{number}]"
            if audio:
                if info.has_audio:
                    graph.append(
                        f"[{number}:a]aformat=sample_rates={SAMPLE_RATE}:channel_layouts=stereo,"
                        f"apad,atrim=duration={info.duration:.3f}[a{number}]"
                    )
                else:
                    graph.append(
                        f"anullsrc=channel_layout=stereo:sample_rate={SAMPLE_RATE},"
                        f"atrim=duration={info.duration:.3f}[a{number}]"
                    )
                joined += f"[a{number}]"
        graph.append(
            f"{joined}concat=n={len(paths)}:v=1:a={int(audio)}[v]" + ("[a]" if audio else "")
        )
        maps = ["-map", "[v]"] + (["-map", "[a]", "-c:a", "aac", "-b:a", "128k"] if audio else [])
        run_ffmpeg(
            [*inputs, "-filter_complex", ";".join(graph), *maps, *_VIDEO_CODEC,
             "-preset", self.preset, "-crf", str(self.crf), "-movflags", "+faststart", str(target)],
            what="stitch",
        )  # fmt: skip
