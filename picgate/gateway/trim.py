"""Which history images go upstream at full size, which smaller, and which only as a note.

The images PicGate inlines into one upstream request count against ``MAX_INLINE_IMAGES_MB``
(``InlineBudget``). While they all fit, all go at full size. A long editing chat soon holds
more than that, so instead of refusing it, ``decide`` then walks the images newest first:

1. The newest image goes at full size; when it alone is over the cap the request is a 413
   (``inline_images_too_large``): nothing smaller would be the image the user is editing.
2. The next ones, up to ``keep_full`` images in all (``INLINE_FULL_IMAGES``), go at full size
   while they fit.
3. Older ones go downscaled (``downscale.py``) while those fit.
4. From the first that does not fit even downscaled, every older image is left out: an image
   moved out of assistant text, or a gateway image in a user part, becomes a short note
   (``[image omitted: …]``); an external URL is not fetched and passes as written.

A *unit* is what one decision covers: an image moved out of assistant text is sent once however
often the history names it, so its references are one unit; every reference in a user part is
sent where it stands, so each is its own unit and each counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from picgate.errors import PayloadTooLarge
from picgate.gateway.inline import InlineBudget
from picgate.gateway.references import Inline, Keep, Omit, Outcome, Ref, Walk

__all__ = ["OMITTED", "Resolver", "Trim", "decide"]

OMITTED = "[image omitted: an older image, left out to stay under MAX_INLINE_IMAGES_MB]"


class Resolver(Protocol):
    """How the references of one request become data URLs."""

    def key(self, ref: Ref) -> str | None:
        """The image's identity (one per distinct image); None: never inlined, kept as is."""

    def external(self, ref: Ref) -> bool:
        """True for a URL that is fetched, not read from the store (kept when left out)."""

    async def full(self, ref: Ref) -> str | None:
        """The image as a data URL; None when it is not there (kept as written)."""

    async def small(self, ref: Ref) -> str | None:
        """A downscaled copy as a data URL; None when it cannot be made."""

    def forget_full(self, ref: Ref) -> None:
        """The full copy will not be sent: free it (it is read again if asked for)."""


@dataclass
class Trim:
    """What ``decide`` did, for the log."""

    full: int = 0
    downscaled: int = 0
    omitted: int = 0


@dataclass
class _Unit:
    refs: list[int] = field(default_factory=list)


def _units(walk: Walk, resolver: Resolver) -> list[_Unit]:
    """Units in history order (by their first reference)."""
    units: list[_Unit] = []
    moved: dict[str, _Unit] = {}
    for index, ref in enumerate(walk.refs):
        key = resolver.key(ref)
        if key is None:
            continue
        if not ref.moved:
            units.append(_Unit([index]))
        elif key in moved:
            moved[key].refs.append(index)
        else:
            moved[key] = _Unit([index])
            units.append(moved[key])
    return units


def _too_large(size: int, budget: InlineBudget, param: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The newest image of this request is {size / 2**20:.1f} MB as sent upstream, more "
        f"than MAX_INLINE_IMAGES_MB ({budget.limit / 2**20:g} MB) by itself. Raise "
        "MAX_INLINE_IMAGES_MB, or send a smaller image.",
        param=param,
        code="inline_images_too_large",
    )


async def decide(
    walk: Walk, resolver: Resolver, *, budget: InlineBudget, keep_full: int
) -> tuple[list[Outcome], Trim]:
    """The outcome of every reference of ``walk`` (see the module doc)."""
    outcomes: list[Outcome] = [Keep() for _ in walk.refs]
    done = Trim()
    units = list(reversed(_units(walk, resolver)))
    fulls = await _all_full(units, walk, resolver, budget)
    if fulls is not None:  # everything fits: nothing to trim
        for unit, full in zip(units, fulls, strict=True):
            _apply(outcomes, unit, Keep() if full is None else Inline(full, full=True))
            done.full += full is not None
        budget.spend(sum(len(full or "") for full in fulls))
        return outcomes, done
    keep_full = max(1, keep_full)  # the newest image is always sent whole
    omitting = False
    sent_full: set[str | None] = set()  # keys whose full copy is sent: kept for the others
    for unit in units:
        first = walk.refs[unit.refs[0]]
        outcome = None if omitting else await _one(first, resolver, budget, keep_full, done)
        if isinstance(outcome, Inline) and outcome.full:
            sent_full.add(resolver.key(first))
        elif not omitting and resolver.key(first) not in sent_full:
            resolver.forget_full(first)
        if outcome is None:  # this one does not fit even downscaled, nor will any older one
            omitting = True
            outcome = Keep() if resolver.external(first) else Omit(OMITTED)
        if isinstance(outcome, Omit):
            done.omitted += 1
        _apply(outcomes, unit, outcome)
    return outcomes, done


def _apply(outcomes: list[Outcome], unit: _Unit, outcome: Outcome) -> None:
    for index in unit.refs:
        outcomes[index] = outcome


async def _all_full(
    units: list[_Unit], walk: Walk, resolver: Resolver, budget: InlineBudget
) -> list[str | None] | None:
    """Every unit's full data URL (newest first) when they all fit; None at the first that
    does not (so what is held at once stays within the cap)."""
    fulls: list[str | None] = []
    total = budget.used
    for unit in units:
        full = await resolver.full(walk.refs[unit.refs[0]])
        total += len(full or "")
        if total > budget.limit:
            return None
        fulls.append(full)
    return fulls


async def _one(
    ref: Ref, resolver: Resolver, budget: InlineBudget, keep_full: int, done: Trim
) -> Outcome | None:
    """The outcome of one unit while images still fit; None when this one does not."""
    full = await resolver.full(ref)
    if full is None:
        return Keep()
    left = budget.limit - budget.used
    if done.full == 0 and done.downscaled == 0 and len(full) > left:
        raise _too_large(len(full), budget, ref.param)
    if done.full < keep_full and len(full) <= left:
        budget.spend(len(full), param=ref.param)
        done.full += 1
        return Inline(full, full=True)
    small = await resolver.small(ref)
    if small is None or len(small) >= len(full):
        small = full  # already small (or not shrinkable): the original is the smaller copy
    if len(small) > left:
        return None
    budget.spend(len(small), param=ref.param)
    if small is full:
        done.full += 1
        return Inline(full, full=True)
    done.downscaled += 1
    return Inline(small)
