import asyncio
import io
import itertools
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image, ImageDraw

from shared.pipeline.local_ffmpeg import MediaInfo, parse_probe, probe
from shared.pipeline.local_provider import (
    LocalImageModel,
    LocalStitcher,
    LocalTextModel,
    LocalVideoModel,
    shot_type_of,
)
from shared.pipeline.ports import (
    AspectRatio,
    AssetBrief,
    ClipRequest,
    KeyframeRequest,
    ProviderError,
    ReferenceImage,
    ShotType,
    StoryboardDraft,
    StoryboardRequest,
    Usage,
)

ASSETS = [
    AssetBrief(
        tag="CHAR_01",
        asset_type="CHARACTER",
        name="Ada",
        reverse_prompt="a woman in her thirties with short dark hair and a green coat",
    ),
    AssetBrief(
        tag="CHAR_02", asset_type="CHARACTER", name="Ben", reverse_prompt="a tall bearded man"
    ),
    AssetBrief(tag="OBJ_01", asset_type="OBJECT", name="Lantern", reverse_prompt="a brass lantern"),
    AssetBrief(tag="PROP_01", asset_type="PROP", name="Chair"),
    AssetBrief(
        tag="ENV_01",
        asset_type="ENVIRONMENT",
        name="Harbour",
        reverse_prompt="a foggy harbour at dawn",
    ),
    AssetBrief(tag="STYLE_01", asset_type="STYLE", name="Noir", reverse_prompt="high contrast"),
]
MANIFEST_TAGS = {a.tag for a in ASSETS}


def storyboard_request(
    scene_count: int = 6, assets: list[AssetBrief] = ASSETS
) -> StoryboardRequest:
    return StoryboardRequest(
        prompt="Two old friends meet again at the harbour and find a lost lantern.",
        style="muted film colours",
        aspect_ratio="16:9",
        scene_count=scene_count,
        clip_seconds=4,
        assets=assets,
    )


def write(request: StoryboardRequest, invent_tags: bool = False) -> tuple[StoryboardDraft, Usage]:
    return asyncio.run(LocalTextModel(invent_tags=invent_tags).storyboard(request))


def png(colour: tuple[int, int, int], size: tuple[int, int] = (200, 300), mark: int = 0) -> bytes:
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    draw.ellipse((20 + mark, 30, 120 + mark, 130), fill=(255 - colour[0], 200, 40))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def frames_and_seconds(video: bytes, tmp_path: Path, name: str = "clip.mp4") -> tuple[int, float]:
    path = tmp_path / name
    path.write_bytes(video)
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(path))
    return frames, seconds


def info_of(video: bytes, tmp_path: Path, name: str = "probe.mp4") -> MediaInfo:
    path = tmp_path / name
    path.write_bytes(video)
    return probe(path)


# Storyboard


@pytest.mark.parametrize("scene_count", [1, 2, 3, 7, 30])
def test_a_storyboard_has_the_asked_number_of_scenes(scene_count: int) -> None:
    draft, _ = write(storyboard_request(scene_count))
    assert len(draft.scenes) == scene_count
    assert draft.scenes[0].shot_type is ShotType.WIDE


def test_storyboard_shots_are_varied_and_follow_the_assets() -> None:
    draft, _ = write(storyboard_request(10))
    shots = [scene.shot_type for scene in draft.scenes]
    assert {ShotType.WIDE, ShotType.MEDIUM, ShotType.CLOSE_UP, ShotType.INSERT} <= set(shots)
    assert all(a != b for a, b in itertools.pairwise(shots)), shots
    types = {a.tag: a.asset_type for a in ASSETS}
    for scene in draft.scenes:
        focus = types[scene.asset_tags[0]]
        if scene.shot_type in {ShotType.CLOSE_UP, ShotType.MEDIUM, ShotType.OVER_THE_SHOULDER}:
            assert focus == "CHARACTER", scene
        if scene.shot_type is ShotType.INSERT:
            assert focus in {"OBJECT", "PROP"}, scene


def test_storyboard_places_only_manifest_tags_one_to_three_per_scene_and_characters_recur() -> None:
    draft, usage = write(storyboard_request(8))
    for scene in draft.scenes:
        assert 1 <= len(scene.asset_tags) <= 3
        assert set(scene.asset_tags) <= MANIFEST_TAGS - {"STYLE_01"}
        assert len(set(scene.asset_tags)) == len(scene.asset_tags)
    with_lead = [s for s in draft.scenes if "CHAR_01" in s.asset_tags]
    assert len(with_lead) >= len(draft.scenes) // 2
    placed = {tag for scene in draft.scenes for tag in scene.asset_tags}
    assert placed == MANIFEST_TAGS - {"STYLE_01"}, "every placeable asset gets a scene"
    assert usage.model == "local-storyboard-1"
    assert usage.cost_usd == 0
    assert usage.input_tokens > 0 and usage.output_tokens > 0


def test_storyboard_prompts_name_the_placed_assets_with_their_reverse_prompts() -> None:
    draft, _ = write(storyboard_request(6))
    briefs = {a.tag: a for a in ASSETS}
    for scene in draft.scenes:
        for tag in scene.asset_tags:
            assert tag in scene.keyframe_prompt and tag in scene.end_keyframe_prompt
            if reverse := briefs[tag].reverse_prompt:
                assert reverse in scene.keyframe_prompt
        assert scene.keyframe_prompt != scene.end_keyframe_prompt
        assert "4 seconds" in scene.motion_prompt
    assert "muted film colours" in draft.style_guide.lower()
    assert "high contrast" in draft.style_guide, "style assets shape the style guide"
    assert {note.tag for note in draft.characters} == {"CHAR_01", "CHAR_02"}


def test_the_same_request_gives_the_same_storyboard() -> None:
    assert write(storyboard_request()) == write(storyboard_request())
    other = StoryboardRequest(**{**storyboard_request().__dict__, "prompt": "A storm at sea."})
    assert write(other)[0] != write(storyboard_request())[0]


def test_a_storyboard_without_a_manifest_places_nothing() -> None:
    draft, _ = write(storyboard_request(5, assets=[]))
    assert len(draft.scenes) == 5
    assert all(scene.asset_tags == [] for scene in draft.scenes)
    assert len({scene.shot_type for scene in draft.scenes}) >= 3


def test_invent_tags_names_assets_by_tags_the_manifest_lacks_with_their_real_names() -> None:
    draft, _ = write(storyboard_request(6), invent_tags=True)
    tags = {tag for scene in draft.scenes for tag in scene.asset_tags}
    invented = tags - MANIFEST_TAGS
    assert {"HERO", "CHAR_99"} <= invented
    assert tags & MANIFEST_TAGS, "the first scene still uses real tags"
    for scene in draft.scenes:
        for tag in set(scene.asset_tags) & invented:
            assert tag in scene.keyframe_prompt
    hero = next(note for note in draft.characters if note.tag == "HERO")
    assert hero.name == "Ada", "the name is what lets the pipeline map HERO back to CHAR_01"


def test_invent_tags_without_a_manifest_still_invents() -> None:
    draft, _ = write(storyboard_request(3, assets=[]), invent_tags=True)
    assert {tag for scene in draft.scenes for tag in scene.asset_tags} == {"HERO", "CHAR_99"}


# Keyframes


def keyframe(request: KeyframeRequest, long_side: int = 640) -> bytes:
    generated = asyncio.run(LocalImageModel(long_side=long_side).keyframe(request))
    assert generated.content_type == "image/png"
    assert generated.usage.images == 1 and generated.usage.cost_usd == 0
    assert generated.usage.model == "local-keyframe-1"
    return generated.data


REFERENCES = [
    ReferenceImage("CHAR_01", png((200, 40, 40)), "image/png"),
    ReferenceImage("OBJ_01", png((40, 40, 200), (300, 200)), "image/png"),
    ReferenceImage("ENV_01", png((30, 160, 60), (640, 360)), "image/png"),
]


@pytest.mark.parametrize(
    ("aspect", "long_side", "size"),
    [
        ("16:9", 1280, (1280, 720)),
        ("9:16", 1280, (720, 1280)),
        ("16:9", 640, (640, 360)),
        ("9:16", 640, (360, 640)),
    ],
)
def test_keyframes_are_pngs_of_the_aspect_ratio(
    aspect: AspectRatio, long_side: int, size: tuple[int, int]
) -> None:
    request = KeyframeRequest("Medium shot of CHAR_01 in ENV_01.", aspect, REFERENCES, seed=1)
    image = decoded(keyframe(request, long_side))
    assert image.format == "PNG"
    assert image.size == size
    assert image.mode == "RGB"


def test_the_same_keyframe_request_gives_the_same_png() -> None:
    request = KeyframeRequest("Wide shot of CHAR_01 on a pier.", "16:9", REFERENCES, seed=7)
    assert keyframe(request) == keyframe(request)


def test_keyframes_differ_when_references_prompts_or_seeds_differ() -> None:
    base = KeyframeRequest("Medium shot of CHAR_01.", "16:9", REFERENCES[:1], seed=7)
    other_reference = [ReferenceImage("CHAR_01", png((40, 200, 200), mark=60), "image/png")]
    variants = [
        base,
        KeyframeRequest(base.prompt, "16:9", other_reference, seed=7),
        KeyframeRequest(base.prompt, "16:9", REFERENCES, seed=7),
        KeyframeRequest(base.prompt, "16:9", [], seed=7),
        KeyframeRequest(base.prompt, "16:9", REFERENCES[:1], seed=8),
        KeyframeRequest("Medium shot of CHAR_01, at night.", "16:9", REFERENCES[:1], seed=7),
    ]
    pngs = [keyframe(request) for request in variants]
    assert len(set(pngs)) == len(pngs)


def test_a_close_up_fills_the_frame_with_the_first_reference() -> None:
    red = [ReferenceImage("CHAR_01", png((220, 20, 20), (300, 300)), "image/png")]
    close = decoded(keyframe(KeyframeRequest("Close-up of CHAR_01.", "16:9", red, seed=1)))
    wide = decoded(keyframe(KeyframeRequest("Wide shot of CHAR_01.", "16:9", red, seed=1)))

    def red_share(image: Image.Image) -> float:
        rgb = np.asarray(image.convert("RGB").resize((64, 36))).astype(int)
        red = (rgb[..., 0] > 150) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
        return float(red.mean())

    assert red_share(close) > 0.4
    assert red_share(wide) < red_share(close) / 2


def test_an_environment_reference_colours_the_background() -> None:
    green = [ReferenceImage("ENV_01", png((20, 200, 40), (400, 300)), "image/png")]
    plain = decoded(keyframe(KeyframeRequest("Wide shot of a harbour.", "16:9", [], seed=3)))
    placed = decoded(keyframe(KeyframeRequest("Wide shot of a harbour.", "16:9", green, seed=3)))
    top = (0, 0, 640, 200)  # above the caption
    plain_rgb = plain.crop(top).resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    placed_rgb = placed.crop(top).resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    assert isinstance(plain_rgb, tuple) and isinstance(placed_rgb, tuple)
    assert placed_rgb[1] - placed_rgb[0] > plain_rgb[1] - plain_rgb[0]


def test_an_unreadable_reference_is_a_provider_error() -> None:
    bad = [ReferenceImage("CHAR_01", b"not an image", "image/png")]
    with pytest.raises(ProviderError, match="CHAR_01"):
        keyframe(KeyframeRequest("Close-up of CHAR_01.", "16:9", bad))


@pytest.mark.parametrize(
    ("prompt", "shot"),
    [
        ("Close-up of CHAR_01 in a wide harbour", ShotType.CLOSE_UP),
        ("Wide establishing shot of ENV_01", ShotType.WIDE),
        ("Insert shot, detail of OBJ_01", ShotType.INSERT),
        ("Over-the-shoulder shot of CHAR_01 and CHAR_02", ShotType.OVER_THE_SHOULDER),
        ("Medium shot of CHAR_02", ShotType.MEDIUM),
    ],
)
def test_the_shot_is_read_from_the_prompt(prompt: str, shot: ShotType) -> None:
    assert shot_type_of(prompt, has_cast=True) is shot


# Clips and stitching


def frame_png(colour: tuple[int, int, int], size: tuple[int, int] = (320, 180)) -> bytes:
    return png(colour, size, mark=40)


def clip(
    seconds: int = 2,
    audio: bool = False,
    size: tuple[int, int] = (320, 180),
    end: bool = True,
) -> bytes:
    request = ClipRequest(
        prompt="CHAR_01 turns toward the light",
        start_frame=frame_png((200, 60, 60), size),
        end_frame=frame_png((60, 60, 200), size) if end else None,
        seconds=seconds,
        aspect_ratio="16:9" if size[0] > size[1] else "9:16",
        audio=audio,
    )
    model = LocalVideoModel()
    operation = asyncio.run(model.start_clip(request))
    assert operation.done and operation.error is None and operation.video is not None
    assert asyncio.run(model.poll_clip(operation)) == operation
    assert operation.usage is not None and operation.usage.video_seconds == seconds
    assert operation.usage.cost_usd == 0
    return operation.video


def test_a_clip_is_an_h264_mp4_of_the_asked_length_and_frame_size(tmp_path: Path) -> None:
    video = clip(seconds=3)
    assert video[4:8] == b"ftyp"
    frames, seconds = frames_and_seconds(video, tmp_path)
    assert frames == 3 * 24
    assert seconds == pytest.approx(3.0, abs=0.05)
    info = info_of(video, tmp_path)
    assert (info.video_codec, info.pix_fmt, info.fps) == ("h264", "yuv420p", 24.0)
    assert (info.width, info.height) == (320, 180)
    assert not info.has_audio


def test_a_vertical_clip_keeps_the_frame_size_and_a_clip_needs_no_end_frame(
    tmp_path: Path,
) -> None:
    info = info_of(clip(seconds=2, size=(180, 320), end=False), tmp_path)
    assert (info.width, info.height) == (180, 320)
    assert info.duration == pytest.approx(2.0, abs=0.05)


def test_a_clip_has_an_audio_stream_only_when_asked(tmp_path: Path) -> None:
    with_audio = info_of(clip(audio=True), tmp_path, "a.mp4")
    assert with_audio.audio_codec == "aac"
    assert with_audio.duration == pytest.approx(2.0, abs=0.05)
    assert not info_of(clip(audio=False), tmp_path, "b.mp4").has_audio


def test_a_clip_moves_from_the_start_frame_to_the_end_frame(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip(seconds=2))
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    frames = [bytes(frame) for frame in reader]
    width, height = meta["size"]
    first = Image.frombytes("RGB", (width, height), frames[0]).resize((1, 1), Image.Resampling.BOX)
    last = Image.frombytes("RGB", (width, height), frames[-1]).resize((1, 1), Image.Resampling.BOX)
    first_r, _, first_b = first.getpixel((0, 0))  # type: ignore[misc]
    last_r, _, last_b = last.getpixel((0, 0))  # type: ignore[misc]
    assert first_r > first_b + 60, "starts on the red start frame"
    assert last_b > last_r + 60, "ends on the blue end frame"


def test_an_unreadable_start_frame_is_a_failed_operation() -> None:
    request = ClipRequest("x", b"nope", None, seconds=2, aspect_ratio="16:9")
    operation = asyncio.run(LocalVideoModel().start_clip(request))
    assert operation.done and operation.video is None
    assert operation.error is not None and "start frame" in operation.error


def stitch(clips: list[bytes], folder: Path) -> bytes:
    """Through files, as the stitch stage streams them."""
    paths = []
    for number, data in enumerate(clips):
        paths.append(folder / f"in-{number}.mp4")
        paths[-1].write_bytes(data)
    LocalStitcher().stitch(paths, folder / "stitched.mp4")
    return (folder / "stitched.mp4").read_bytes()


def test_stitching_three_clips_gives_their_summed_duration(tmp_path: Path) -> None:
    clips = [clip(seconds=2), clip(seconds=3), clip(seconds=2)]
    stitched = stitch(clips, tmp_path)
    frames, seconds = frames_and_seconds(stitched, tmp_path)
    assert frames == 7 * 24
    assert seconds == pytest.approx(7.0, abs=0.05)
    info = info_of(stitched, tmp_path)
    assert (info.video_codec, info.width, info.height) == ("h264", 320, 180)


def test_stitching_clips_of_different_streams_reencodes_them_into_one(tmp_path: Path) -> None:
    clips = [clip(seconds=2, audio=True), clip(seconds=2, size=(640, 360)), clip(seconds=2)]
    stitched = stitch(clips, tmp_path)
    info = info_of(stitched, tmp_path)
    assert (info.width, info.height) == (320, 180), "the first clip's frame"
    assert info.audio_codec == "aac", "silence where a clip had no sound"
    assert info.duration == pytest.approx(6.0, abs=0.1)
    frames, _ = frames_and_seconds(stitched, tmp_path, "frames.mp4")
    assert frames == 6 * 24


def test_stitching_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="no clips"):
        LocalStitcher().stitch([], tmp_path / "stitched.mp4")


def test_the_probe_reads_ffmpeg_stream_descriptions() -> None:
    text = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':
  Duration: 00:01:02.50, start: 0.000000, bitrate: 845 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709, progressive), 1280x720 [SAR 1:1 DAR 16:9], 830 kb/s, 24 fps, 24 tbr, 12288 tbn (default)
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo, fltp, 2 kb/s (default)
"""
    info = parse_probe(text)
    assert info == MediaInfo(
        duration=62.5,
        video_codec="h264",
        pix_fmt="yuv420p",
        width=1280,
        height=720,
        fps=24.0,
        audio_codec="aac",
        sample_rate=48000,
        channels="stereo",
    )
