"""Landmark schemes: how many points, which points form which facial part.

One place for everything that depends on the point order: the contour groups used
for drawing, the two eye groups whose centres give the inter-ocular distance, and
(for 68 points) the outer eye corners of the 300-W convention.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Group:
    name: str
    start: int
    stop: int  # exclusive
    closed: bool

    @property
    def indices(self) -> list[int]:
        return list(range(self.start, self.stop))


@dataclass(frozen=True)
class Scheme:
    name: str
    n_points: int
    groups: tuple[Group, ...]
    left_eye: str
    right_eye: str
    outer_eye_corners: tuple[int, int] | None = None
    extra: dict = field(default_factory=dict)

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"scheme {self.name!r} has no group {name!r}")


HELEN194 = Scheme(
    name="helen194",
    n_points=194,
    groups=(
        Group("jaw", 0, 41, closed=False),
        Group("nose", 41, 58, closed=False),
        Group("outer_lips", 58, 86, closed=True),
        Group("inner_lips", 86, 114, closed=True),
        Group("eye_a", 114, 134, closed=True),
        Group("eye_b", 134, 154, closed=True),
        Group("brow_a", 154, 174, closed=True),
        Group("brow_b", 174, 194, closed=True),
    ),
    left_eye="eye_a",
    right_eye="eye_b",
)

IBUG68 = Scheme(
    name="ibug68",
    n_points=68,
    groups=(
        Group("jaw", 0, 17, closed=False),
        Group("brow_a", 17, 22, closed=False),
        Group("brow_b", 22, 27, closed=False),
        Group("nose_bridge", 27, 31, closed=False),
        Group("nose_base", 31, 36, closed=False),
        Group("eye_a", 36, 42, closed=True),
        Group("eye_b", 42, 48, closed=True),
        Group("outer_lips", 48, 60, closed=True),
        Group("inner_lips", 60, 68, closed=True),
    ),
    left_eye="eye_a",
    right_eye="eye_b",
    outer_eye_corners=(36, 45),
)

SCHEMES = {s.name: s for s in (HELEN194, IBUG68)}


def scheme_for_points(n_points: int) -> Scheme:
    """The scheme with this many points; a clear error when none has it."""
    for s in SCHEMES.values():
        if s.n_points == n_points:
            return s
    known = ", ".join(f"{s.name} ({s.n_points})" for s in SCHEMES.values())
    raise ValueError(f"no landmark scheme has {n_points} points; known schemes: {known}")


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown landmark scheme {name!r}; known: {sorted(SCHEMES)}") from None
