"""The local storyboard model: a deterministic storyboard written from the prompt, the style
and the manifest's asset briefs, with no network.

It plans shots the way an editor would: a wide establishing shot first, then medium shots and
close-ups of the characters, inserts of objects and props, wide shots of the places, and a wide
closing shot. Characters recur; every scene places one to three assets and its prompts name them
by tag with their reverse prompts, as the pipeline's prompt rewriting expects a real model's
prompts to read.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

from shared.pipeline.ports import (
    AssetBrief,
    CharacterNote,
    SceneDraft,
    ShotType,
    StoryboardDraft,
    StoryboardRequest,
    Usage,
)

CHARACTER_TYPES = frozenset({"CHARACTER"})
PLACE_TYPES = frozenset({"ENVIRONMENT"})
STYLE_TYPES = frozenset({"STYLE"})
"""Styles shape the style guide; they are never placed in a scene."""

TITLE_LIMIT = 120
MAX_TAGS = 3

# The order of the later shots; a shot whose kind of asset the manifest lacks is skipped, so a
# manifest of characters alone alternates medium shots and close-ups.
SHOT_CYCLE = (
    ShotType.MEDIUM,
    ShotType.INSERT,
    ShotType.CLOSE_UP,
    ShotType.OVER_THE_SHOULDER,
    ShotType.WIDE,
)
BARE_CYCLE = (ShotType.MEDIUM, ShotType.CLOSE_UP, ShotType.WIDE, ShotType.INSERT)
"""Without assets: still varied, so the keyframes are."""

SHOT_WORDS = {
    ShotType.WIDE: "Wide shot",
    ShotType.MEDIUM: "Medium shot",
    ShotType.CLOSE_UP: "Close-up",
    ShotType.OVER_THE_SHOULDER: "Over-the-shoulder shot",
    ShotType.INSERT: "Insert shot, detail",
}
CAMERA_MOVES = {
    ShotType.WIDE: ("slow push-in across the whole scene", "gentle lateral pan"),
    ShotType.MEDIUM: ("slow dolly alongside", "gentle handheld drift"),
    ShotType.CLOSE_UP: ("slow zoom in on the face", "barely moving, shallow focus"),
    ShotType.OVER_THE_SHOULDER: ("slow rack focus from the shoulder to the face", "slight arc"),
    ShotType.INSERT: ("macro slide across the detail", "slow tilt over the surface"),
}
CHARACTER_ACTIONS = (
    "looks up",
    "steps forward",
    "turns toward the light",
    "pauses, thinking",
    "smiles to themselves",
    "reaches out",
    "glances over a shoulder",
    "takes a slow breath",
)
THING_ACTIONS = (
    "catches the light",
    "rests in the foreground",
    "is lifted into view",
    "turns slowly",
    "gleams against the background",
)
PLACE_ACTIONS = (
    "stretches into the distance",
    "fills with soft morning light",
    "settles into dusk",
    "hums with quiet life",
)
PHASES = ("Opening", "Arrival", "Discovery", "Complication", "Turn", "Climax", "Ending")

PROTAGONIST = "the protagonist"
"""Who a storyboard without characters follows; its character note has this name."""
INVENTED_LEAD = "HERO"
INVENTED_NUMBER = 99


@dataclass(frozen=True)
class _Shot:
    shot_type: ShotType
    assets: tuple[AssetBrief, ...]
    """The focus first: the keyframe model fills a close-up with the first reference."""


class LocalTextModel:
    """Writes a storyboard without a language model: same request, same storyboard.

    With `invent_tags=True` it makes the mistake real models make: from the second scene on,
    every other scene names its assets by tags the manifest does not have ("HERO" for the lead
    character, the type's prefix with an unused number such as "CHAR_99" for the others), while
    the names and reverse prompts in the text and the character notes stay the real ones, so
    the pipeline's remapping has something to recognise them by.
    """

    name = "local-storyboard-1"

    def __init__(self, *, invent_tags: bool = False) -> None:
        self.invent_tags = invent_tags

    async def storyboard(self, request: StoryboardRequest) -> tuple[StoryboardDraft, Usage]:
        draft = write_storyboard(request, invent_tags=self.invent_tags)
        usage = Usage(
            model=self.name,
            input_tokens=_tokens(_request_text(request)),
            output_tokens=_tokens(draft.model_dump_json()),
        )
        return draft, usage


def write_storyboard(request: StoryboardRequest, *, invent_tags: bool = False) -> StoryboardDraft:
    if request.scene_count < 1:
        raise ValueError("a storyboard needs at least one scene")
    rng = random.Random(hashlib.sha256(_request_text(request).encode()).digest())
    characters = [a for a in request.assets if a.asset_type in CHARACTER_TYPES]
    places = [a for a in request.assets if a.asset_type in PLACE_TYPES]
    styles = [a for a in request.assets if a.asset_type in STYLE_TYPES]
    things = [
        a for a in request.assets if a.asset_type not in CHARACTER_TYPES | PLACE_TYPES | STYLE_TYPES
    ]
    shots = _plan_shots(request.scene_count, characters, things, places)
    aliases = _invented_aliases(request.assets, characters) if invent_tags else {}
    style_guide = _style_guide(request, styles)
    scenes = [
        _scene(
            request,
            number,
            shot,
            rng,
            style_guide,
            aliases if number % 2 == 1 else {},
        )
        for number, shot in enumerate(shots)
    ]
    if invent_tags and not (characters or things or places):
        # Nothing to rename: the tags are invented outright, and the pipeline must drop them.
        for number, scene in enumerate(scenes):
            scene.asset_tags = [INVENTED_LEAD, f"CHAR_{INVENTED_NUMBER}"][: 1 + number % 2]
    notes = [
        CharacterNote(
            tag=aliases.get(c.tag, c.tag),
            name=c.name,
            description=c.reverse_prompt or f"{c.name}, as in the reference photos",
        )
        for c in characters
    ] or [
        CharacterNote(
            tag=INVENTED_LEAD if invent_tags else None,
            name=_capital(PROTAGONIST),
            description=f"The central figure of: {_clip(request.prompt, 160)}",
        )
    ]
    return StoryboardDraft(
        title=_clip(_title_from(request.prompt), TITLE_LIMIT),
        style_guide=style_guide,
        characters=notes,
        scenes=scenes,
    )


def _plan_shots(
    count: int,
    characters: list[AssetBrief],
    things: list[AssetBrief],
    places: list[AssetBrief],
) -> list[_Shot]:
    lead = characters[:1]
    shots = [_Shot(ShotType.WIDE, tuple((places[:1] + characters[:2] + things[:1])[:MAX_TAGS]))]
    if not (characters or things or places):
        return shots + [_Shot(BARE_CYCLE[i % len(BARE_CYCLE)], ()) for i in range(count - 1)]
    # Each kind of asset has its own pointer, so every asset gets its turn as the focus.
    turns = {"character": 0, "thing": 0, "place": 0}

    def take(kind: str, pool: list[AssetBrief]) -> AssetBrief:
        asset = pool[turns[kind] % len(pool)]
        turns[kind] += 1
        return asset

    possible = {ShotType.MEDIUM, ShotType.CLOSE_UP} if characters else set()
    possible |= {ShotType.OVER_THE_SHOULDER} if len(characters) >= 2 else set()
    possible |= {ShotType.INSERT} if things else set()
    possible |= {ShotType.WIDE} if places else set()
    step = 0
    while len(shots) < count:
        is_last = len(shots) == count - 1 and count >= 3
        shot_type = ShotType.WIDE if is_last else SHOT_CYCLE[step % len(SHOT_CYCLE)]
        step += 1
        # Two shots of one kind in a row read as a mistake, the closing wide included.
        follows = ShotType.WIDE if len(shots) == count - 2 and count >= 3 else None
        if not is_last and len(possible) > 1 and shot_type in {shots[-1].shot_type, follows}:
            continue
        assets: list[AssetBrief]
        if shot_type is ShotType.MEDIUM and characters:
            focus = take("character", characters)
            # A prop no shot has shown yet joins the character; otherwise a second character.
            placed = {a.tag for shot in shots for a in shot.assets}
            unseen = [t for t in things if t.tag not in placed][:1]
            partner = unseen or [c for c in characters if c is not focus][:1] or things[:1]
            assets = [focus, *partner, *places[:1]]
        elif shot_type is ShotType.CLOSE_UP and characters:
            assets = [take("character", characters)]
        elif shot_type is ShotType.OVER_THE_SHOULDER and len(characters) >= 2:
            focus = take("character", characters)
            assets = [focus, *[c for c in characters if c is not focus][:1]]
        elif shot_type is ShotType.INSERT and things:
            # The lead stays in the scene (a hand, a glance): characters recur.
            assets = [take("thing", things), *lead]
        elif shot_type is ShotType.WIDE and (places or is_last):
            setting = [take("place", places)] if places else []
            assets = [*setting, *characters[:2]] or things[:1]
        else:
            continue
        shots.append(_Shot(shot_type, tuple(_unique(assets)[:MAX_TAGS])))
    return shots[:count]


def _scene(
    request: StoryboardRequest,
    number: int,
    shot: _Shot,
    rng: random.Random,
    style_guide: str,
    aliases: dict[str, str],
) -> SceneDraft:
    phase = _phase(number, request.scene_count)
    subjects = [a for a in shot.assets if a.asset_type not in PLACE_TYPES]
    setting = [a for a in shot.assets if a.asset_type in PLACE_TYPES]
    focus = shot.assets[0] if shot.assets else None
    action, end_action = _actions(focus, rng)
    first = number == 0
    shot_words = "Wide establishing shot" if first else SHOT_WORDS[shot.shot_type]

    def tag_of(asset: AssetBrief) -> str:
        return aliases.get(asset.tag, asset.tag)

    if subjects:
        subject_text = _join([_describe(a, aliases) for a in subjects])
        subject_tags = _join([tag_of(a) for a in subjects])
        setting_text = f" in {_describe(setting[0], aliases)}" if setting else ""
        setting_tag = f" in {tag_of(setting[0])}" if setting else ""
    elif setting:
        # A place alone is the subject of its own shot.
        subject_text, subject_tags = _describe(setting[0], aliases), tag_of(setting[0])
        setting_text = setting_tag = ""
    else:
        subject_text = subject_tags = PROTAGONIST
        setting_text = setting_tag = f" in the world of {_brief(request)}"
    actor = tag_of(focus) if focus else PROTAGONIST
    move, alternative = CAMERA_MOVES[shot.shot_type]
    camera = move if rng.random() < 0.6 else alternative
    focus_name = focus.name if focus else _clip(_title_from(request.prompt), 60)
    return SceneDraft(
        title=_clip(f"{phase}: {focus_name}", TITLE_LIMIT),
        description=(
            f"{phase} of the story. {shot_words} of {subject_tags}{setting_tag}:"
            f" {actor} {action}, then {end_action}. Story: {_brief(request)}."
        ),
        shot_type=shot.shot_type,
        keyframe_prompt=(
            f"{shot_words} of {subject_text}{setting_text}. {_capital(actor)} {action}."
            f" Style: {style_guide}"
        ),
        end_keyframe_prompt=(
            f"{shot_words}, end of the scene, of {subject_text}{setting_text}."
            f" {_capital(actor)} {end_action}. Style: {style_guide}"
        ),
        motion_prompt=(
            f"Camera: {camera}. {_capital(actor)} {action}, then {end_action},"
            f" over {request.clip_seconds} seconds."
        ),
        asset_tags=[aliases.get(a.tag, a.tag) for a in shot.assets],
    )


def _invented_aliases(assets: list[AssetBrief], characters: list[AssetBrief]) -> dict[str, str]:
    taken = {a.tag for a in assets}
    aliases: dict[str, str] = {}
    number = INVENTED_NUMBER
    for asset in assets:
        if asset.asset_type in STYLE_TYPES:
            continue
        if characters and asset is characters[0] and INVENTED_LEAD not in taken:
            aliases[asset.tag] = INVENTED_LEAD
            continue
        prefix = asset.tag.rsplit("_", 1)[0]
        while f"{prefix}_{number}" in taken:
            number -= 1
        aliases[asset.tag] = f"{prefix}_{number}"
        taken.add(aliases[asset.tag])
    return aliases


def _style_guide(request: StoryboardRequest, styles: list[AssetBrief]) -> str:
    look = request.style or "naturalistic colour, soft directional light, shallow depth of field"
    frame = "landscape 16:9" if request.aspect_ratio == "16:9" else "vertical 9:16"
    parts = [f"{_capital(look)}; {frame} framing"]
    parts += [f"{s.tag} ({s.name}): {s.reverse_prompt or s.name}" for s in styles]
    parts.append("consistent faces, wardrobe and palette in every scene")
    return "; ".join(parts) + "."


def _describe(asset: AssetBrief, aliases: dict[str, str]) -> str:
    tag = aliases.get(asset.tag, asset.tag)
    if asset.reverse_prompt:
        return f"{tag} ({asset.name}: {asset.reverse_prompt.strip().rstrip('.')})"
    return f"{tag} ({asset.name})"


def _actions(focus: AssetBrief | None, rng: random.Random) -> tuple[str, str]:
    pool: tuple[str, ...]
    if focus is None or focus.asset_type in CHARACTER_TYPES:
        pool = CHARACTER_ACTIONS
    elif focus.asset_type in PLACE_TYPES:
        pool = PLACE_ACTIONS
    else:
        pool = THING_ACTIONS
    first, second = rng.sample(pool, 2)
    return first, second


def _phase(number: int, count: int) -> str:
    if number == 0:
        return PHASES[0]
    if number == count - 1:
        return PHASES[-1]
    middle = PHASES[1:-1]
    return middle[min(len(middle) - 1, (number - 1) * len(middle) // max(1, count - 2))]


def _request_text(request: StoryboardRequest) -> str:
    return json.dumps(
        {
            "prompt": request.prompt,
            "style": request.style,
            "aspect_ratio": request.aspect_ratio,
            "scene_count": request.scene_count,
            "clip_seconds": request.clip_seconds,
            "assets": [a.model_dump() for a in request.assets],
        },
        sort_keys=True,
    )


def _tokens(text: str) -> int:
    # The usual rule of thumb for English text: about four characters a token.
    return max(1, len(text) // 4)


def _brief(request: StoryboardRequest) -> str:
    return _clip(" ".join(request.prompt.split()).rstrip("."), 160)


def _title_from(prompt: str) -> str:
    words = prompt.split()
    title = " ".join(words[:8]).rstrip(".,;:")
    return _capital(title) if title else "Untitled"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _unique(assets: list[AssetBrief]) -> list[AssetBrief]:
    by_tag: dict[str, AssetBrief] = {}
    for asset in assets:
        by_tag.setdefault(asset.tag, asset)
    return list(by_tag.values())
