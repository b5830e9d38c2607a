"""Landmark schemes: how many points, which points form which facial part.

One place for everything that depends on the point order: the contour groups used
for drawing, the two eye groups whose centres give the inter-ocular distance, the mirror
map for horizontal flips, and the outer eye corners (NME over the outer corners, the 300-W convention).
"""

from __future__ import annotations

from dataclasses import dataclass


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
    mirror: tuple[
        int, ...
    ] = ()  # mirror[i]: the point that i becomes in a horizontally flipped face

    def __post_init__(self):
        m = self.mirror
        if sorted(m) != list(range(self.n_points)) or any(
            m[m[i]] != i for i in range(self.n_points)
        ):
            raise ValueError(
                f"scheme {self.name}: mirror map must be an involutive permutation of its points"
            )

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"scheme {self.name!r} has no group {name!r}")


def _pairs(n: int, *pairs: tuple[int, int]) -> tuple[int, ...]:
    m = list(range(n))
    for a, b in pairs:
        m[a], m[b] = b, a
    return tuple(m)


def _reverse(start: int, stop: int) -> list[tuple[int, int]]:
    """An open contour that runs across the face: its ends swap."""
    return [(start + i, stop - 1 - i) for i in range((stop - start) // 2)]


def _closed(start: int, n: int, half: int) -> list[tuple[int, int]]:
    """A closed contour of n points starting at a point k that mirrors to k + half: i <-> half - i."""
    return [(start + i, start + (half - i) % n) for i in range(n) if i < (half - i) % n]


# Helen 194, as the release orders its points (derived from and checked against the 870 faces of
# ../shared/data/helen194; worst pair 0.086 inter-ocular distances, at the brows' outer ends, where
# the data's mean head is slightly turned): jaw 0-40 and nose 41-57 run from the image's left;
# the outer lip is the upper edge 58-71 from the left corner to the right one, then the lower edge
# 72-85 back; the inner lip starts at its left corner 86, upper edge 87-99, right corner 100, lower
# edge 101-113 back; each eye starts at its inner corner and runs along the upper lid to its outer
# corner (124, 144) and back along the lower; each brow starts at its inner end and runs along its
# upper edge to its outer end (164, 184) and back. The eye and brow on the image's right come first.
_HELEN_MIRROR = _pairs(
    194,
    *_reverse(0, 41),
    *_reverse(41, 58),
    *_closed(58, 28, 13),
    *_closed(86, 28, 14),
    *[(114 + i, 134 + i) for i in range(20)],
    *[(154 + i, 174 + i) for i in range(20)],
)

# iBUG 68: the standard 300-W flip pairs
_IBUG_MIRROR = _pairs(
    68,
    *_reverse(0, 17),
    *_reverse(17, 27),
    (31, 35),
    (32, 34),
    (36, 45),
    (37, 44),
    (38, 43),
    (39, 42),
    (40, 47),
    (41, 46),
    (48, 54),
    (49, 53),
    (50, 52),
    (55, 59),
    (56, 58),
    (60, 64),
    (61, 63),
    (65, 67),
)

HELEN194 = Scheme(
    name="helen194",
    n_points=194,
    groups=(
        Group("jaw", 0, 41, closed=False),
        Group("nose", 41, 58, closed=False),
        Group("outer_lips", 58, 86, closed=True),
        Group("inner_lips", 86, 114, closed=True),
        Group("eye_a", 114, 134, closed=True),  # the eye on the image's right (the person's left)
        Group("eye_b", 134, 154, closed=True),  # the eye on the image's left
        Group("brow_a", 154, 174, closed=True),
        Group("brow_b", 174, 194, closed=True),
    ),
    left_eye="eye_a",
    right_eye="eye_b",
    outer_eye_corners=(144, 124),  # image left, image right, as ibug68's (36, 45)
    mirror=_HELEN_MIRROR,
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
    mirror=_IBUG_MIRROR,
)

SCHEMES = {s.name: s for s in (HELEN194, IBUG68)}


def scheme_for_points(n_points: int) -> Scheme:
    """The scheme with this many points; a clear error when none has it.

    Used in: 01_prepare, "One face, from its box to what the network sees"."""
    for s in SCHEMES.values():
        if s.n_points == n_points:
            return s
    known = ", ".join(f"{s.name} ({s.n_points})" for s in SCHEMES.values())
    raise ValueError(f"no landmark scheme has {n_points} points; known schemes: {known}")


def mirror_errors(scheme: Scheme, mean_shape, width: float):
    """Per point, how far the mirrored and renumbered mean shape lands from the mean shape,
    in units of the inter-ocular distance. ``mean_shape`` (K, 2) lies in a crop ``width``
    wide whose vertical centre line is the face's axis (as lmkit's crops are)."""
    import numpy as np

    m = np.asarray(mean_shape, dtype=np.float64)
    flipped = m[list(scheme.mirror)]
    flipped[:, 0] = width - flipped[:, 0]
    eyes = np.linalg.norm(
        m[scheme.group(scheme.left_eye).indices].mean(0)
        - m[scheme.group(scheme.right_eye).indices].mean(0)
    )
    return np.linalg.norm(flipped - m, axis=1) / eyes


MIRROR_TOLERANCE = 0.15  # inter-ocular distances; measured at most 0.07 on helen68 (chin), 0.086 on helen194 (brow ends);
# swapped eye corners 0.99


def check_mirror(
    scheme: Scheme, mean_shape, width: float, tolerance: float = MIRROR_TOLERANCE
) -> None:
    """Before any use of the mirror map (training flips, the flip test): the data's mean shape,
    mirrored and renumbered, must land on itself within ``tolerance``. Raises a ValueError
    naming the scheme and the worst point pairs otherwise."""
    import numpy as np

    err = mirror_errors(scheme, mean_shape, width)
    if err.max() <= tolerance:
        return
    worst = [int(i) for i in np.argsort(err)[::-1] if err[i] > tolerance][:5]
    pairs = ", ".join(f"{i}<->{scheme.mirror[i]} ({err[i]:.2f})" for i in worst)
    raise ValueError(
        f"scheme {scheme.name}: its mirror map does not fit this data: the mean shape, mirrored and "
        f"renumbered, misses itself by up to {err.max():.2f} inter-ocular distances (tolerance "
        f"{tolerance}); worst points: {pairs}. Check the point order of the annotations, or train "
        "without train.flip and eval.flip_test"
    )
