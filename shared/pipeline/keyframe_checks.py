"""The identity checks of one keyframes chunk, in its event loop, with their re-rolls.

Each made keyframe is checked as soon as it exists; one below the threshold is made again
with a re-roll (a new counter, so a new seed and a new digest: see
shared/pipeline/identity.py `identity_reroll`), up to `rerolls` times, and the best of all is
kept. The runner saves the scene only once it is checked, so a redelivered chunk does not
check it again; and since a re-roll's digest follows from the keyframe's inputs, a delivery
that died mid-way finds the remakes it paid for in the index.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from shared.models.assets import Asset
from shared.models.projects import FrameIdentity, IdentityVerdict, Project, Scene, SceneIdentity
from shared.pipeline.identity import Character, IdentityChecks, identity_reroll, weakest
from shared.pipeline.provenance import KeyframeSpec, keyframe_specs
from shared.repositories.artifacts import IndexEntry

ROLES = ("start_frame", "end_frame")

MakeKeyframe = Callable[[KeyframeSpec, int], Awaitable[tuple[IndexEntry, bool]]]
"""Makes (or takes from the index) the keyframe of a spec for a scene: (entry, reused)."""


@dataclass
class Remake:
    spec: KeyframeSpec
    entry: IndexEntry
    reused: bool
    counter: int


class KeyframeChecks:
    def __init__(
        self, checks: IdentityChecks | None, project: Project, by_id: Mapping[str, Asset],
        made_in: str, make: MakeKeyframe,
    ) -> None:  # fmt: skip
        self._checks = checks
        self._project = project
        self._by_id = by_id
        self._made_in = made_in
        self._make = make
        self._finder = checks.finder() if checks else None
        self._calls = checks.calls() if checks else None

    async def close(self) -> None:
        if self._finder is not None:
            await self._finder.aclose()

    async def checked(self, before: Scene, made: Scene, specs: list[KeyframeSpec]) -> Scene:
        """`made` (the scene with its keyframes) with their checks, and the re-rolls kept."""
        if self._checks is None:
            return made
        characters = self._checks.characters(made, self._by_id)
        after = made.model_copy(deep=True)
        if isinstance(characters, str):
            after.identity = SceneIdentity.skipped(characters)
            return after
        by_role = {spec.role: spec for spec in specs}
        roles = [role for role in ROLES if getattr(made, f"{role}_object")]
        results = await asyncio.gather(
            *(self._frame(before, made, role, by_role.get(role), characters) for role in roles)
        )
        frames = dict(after.identity.frames) if after.identity else {}
        for role, (frame, remake, spent) in zip(roles, results, strict=True):
            frames[role] = frame
            after.cost_usd = round(after.cost_usd + spent, 6)
            if remake is not None:
                setattr(after, f"{role}_object", remake.entry.object_name)
                setattr(after, f"{role}_reroll", remake.counter)
                after.bases[role] = remake.spec.digest
                if remake.reused:
                    after.reused_from[role] = remake.entry.source()
                else:
                    after.reused_from.pop(role, None)
        after.identity = SceneIdentity.of_frames(frames)
        return after

    async def _frame(
        self, before: Scene, made: Scene, role: str, spec: KeyframeSpec | None,
        characters: list[Character],
    ) -> tuple[FrameIdentity, Remake | None, float]:  # fmt: skip
        """The keyframe's check, the remake kept instead of it (if one), what remakes cost."""
        assert self._checks is not None and self._finder is not None and self._calls is not None
        if spec is None and made.identity and role in made.identity.frames:
            return made.identity.frames[role], None, 0.0  # an upload, checked when it came

        async def check(object_name: str) -> FrameIdentity:
            assert self._checks is not None and self._finder is not None
            assert self._calls is not None
            return await self._checks.check(self._project, made.index, object_name, characters,
                                            self._finder, self._calls, self._made_in)  # fmt: skip

        first = await check(getattr(made, f"{role}_object"))
        if spec is None:  # the user's own keyframe: flagged if need be, never remade
            return first.model_copy(update={"uploaded": True}), None, 0.0
        if first.verdict is not IdentityVerdict.BELOW_THRESHOLD:
            return first, None, 0.0
        best, kept, spent, tried = first, None, 0.0, 0
        checks, seconds = first.checks, first.seconds
        for attempt in range(1, self._checks.settings.rerolls + 1):
            counter = identity_reroll(spec.digest, attempt)
            rolled = before.model_copy(update={f"{role}_reroll": counter})
            remade = next(
                k for k in keyframe_specs(self._project, rolled, self._by_id) if k.role == role
            )
            entry, reused = await self._make(remade, made.index)
            spent += 0.0 if reused else entry.cost_usd
            tried = attempt
            result = await check(entry.object_name)
            checks, seconds = checks + result.checks, seconds + result.seconds
            if result.verdict is IdentityVerdict.UNCHECKED:
                break  # no one to ask: keep what was judged, flagged as it stands
            if weakest(result) > weakest(best):
                best, kept = result, Remake(remade, entry, reused, counter)
            if result.verdict is IdentityVerdict.PASS:
                break
        totals = {"rerolls": tried, "checks": checks, "seconds": round(seconds, 3)}
        return best.model_copy(update=totals), kept, spent
