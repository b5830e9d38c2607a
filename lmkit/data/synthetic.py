"""Procedural synthetic faces: the built-in default data set.

Each face is drawn at 300x300 with 194 landmarks in ``helen194`` order that lie on the
contours actually drawn: face outline (jaw), nose, outer and inner lips, eyes, brows.
Faces vary in shape, expression (mouth opening, smile, brow raise, eye opening), pose
(in-plane rotation, a pseudo-3D yaw, scale, shift), skin tone, background clutter,
lighting, blur and noise. Face ``i`` of split ``s`` depends only on ``(seed, s, i)``.

Synthetic results show that the machinery works; they are never comparable to the study.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lmkit.data.readers import Entry, Sample

SIZE = 300
_SUPER = 2  # draw at 2x, then box-filter down: smooth edges, exact sub-pixel geometry
_SPLIT_IDS = {"train": 0, "test": 1}
_YY, _XX = (np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5) / SIZE - 0.5


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def face_shape(rng) -> np.ndarray:
    """194 landmarks in face coordinates (face half-width 1, y down), helen194 order,
    plus the depth of each point (for the yaw), as a (194, 3) array."""
    w = _u(rng, 0.9, 1.1)
    jaw_cy, jaw_ry = _u(rng, -0.25, -0.05), _u(rng, 1.25, 1.55)
    chin_p, cheek_q = _u(rng, 0.8, 1.4), _u(rng, 0.75, 1.15)
    eye_x, eye_y, eye_w = _u(rng, 0.34, 0.46), _u(rng, -0.3, -0.15), _u(rng, 0.17, 0.24)
    eye_h = eye_w * _u(rng, 0.25, 0.5) * _u(rng, 0.5, 1.15)  # shape x openness
    brow_raise, brow_arch = _u(rng, -0.04, 0.14), _u(rng, 0.02, 0.1)
    nose_len, nose_w = _u(rng, 0.45, 0.65), _u(rng, 0.14, 0.24)
    mouth_y, mouth_w = eye_y + nose_len + _u(rng, 0.25, 0.4), _u(rng, 0.28, 0.45)
    lip_u, lip_l = _u(rng, 0.05, 0.1), _u(rng, 0.07, 0.14)
    opening = max(0.0, _u(rng, -0.15, 0.35))
    smile = _u(rng, -0.06, 0.1)

    # jaw: 41 points from the left temple around the chin to the right temple
    a = np.linspace(np.pi, 0, 41)
    c = np.cos(a)
    jaw = np.stack(
        [w * np.sign(c) * np.abs(c) ** cheek_q, jaw_cy + jaw_ry * np.sin(a) ** chin_p], 1
    )

    # nose: left side of the bridge down, around the base, up the right side (4 + 9 + 4)
    top, base = eye_y + 0.08, eye_y + nose_len
    left = np.stack([np.linspace(-0.08, -nose_w, 5)[:4], np.linspace(top, base - 0.08, 5)[:4]], 1)
    t = np.linspace(np.pi, 0, 9)
    bottom = np.stack([nose_w * np.cos(t), base - 0.08 + 0.12 * np.sin(t)], 1)
    right = left[::-1] * [-1, 1]
    nose = np.concatenate([left, bottom, right])

    # lips, as Helen's release: the outer lip's upper edge from the left corner to the right one
    # (14 points), its lower edge back between the corners (14); the inner lip from its left corner
    # along the upper edge (1 + 13), its right corner, the lower edge back (1 + 13)
    def lips(half_w, upper, lower, lift, corners_on_upper):
        def edge(t, height, sign):
            corner = lift * (2 * t - 1) ** 2
            bow = 1 - 0.35 * np.exp(-(((t - 0.5) / 0.08) ** 2)) if sign < 0 else 1  # cupid's bow
            return np.stack(
                [
                    -half_w + 2 * half_w * t,
                    mouth_y - corner + sign * height * np.sin(np.pi * t) * bow,
                ],
                1,
            )

        if corners_on_upper:
            return np.concatenate(
                [
                    edge(np.linspace(0, 1, 14), upper, -1),
                    edge(np.linspace(1, 0, 16)[1:15], lower, 1),
                ]
            )
        t = np.linspace(0, 1, 15)
        return np.concatenate([edge(t[:14], upper, -1), edge(t[::-1][:14], lower, 1)])

    outer = lips(mouth_w, lip_u + opening / 2, lip_l + opening / 2, smile, corners_on_upper=True)
    inner = lips(mouth_w * 0.8, opening / 2, opening / 2, smile, corners_on_upper=False)

    # eyes and brows, as Helen's release: the image's right one first; each from its inner end
    # along the upper edge to the outer end (an eye's outer corner is its point 10, a brow's
    # outer end its point 10), then back along the lower edge
    def eye(cx):
        t = np.linspace(0, 2 * np.pi, 21)[:20]
        y = -eye_h * np.sin(t) * (1 + 0.25 * np.cos(t))  # rounder at the inner corner
        return np.stack([cx - np.sign(cx) * eye_w * np.cos(t), eye_y + y], 1)

    def brow(side):
        def edge(t, dy):
            th = 0.07 * (1 - 0.5 * t)
            x = side * (eye_x - eye_w * 1.1 + t * eye_w * 2.4)
            return np.stack(
                [x, eye_y - 0.2 - brow_raise - brow_arch * np.sin(np.pi * t) + dy * th / 2], 1
            )

        return np.concatenate(
            [edge(np.linspace(0, 1, 11), -1), edge(np.linspace(1, 0, 11)[1:10], 1)]
        )

    pts = np.concatenate([jaw, nose, outer, inner, eye(eye_x), eye(-eye_x), brow(1), brow(-1)])
    depth = 0.7 * np.sqrt(np.clip(1 - (pts[:, 0] / 1.05) ** 2, 0, 1))
    depth[41:58] += 0.35 * np.linspace(0, 1, 17) ** 0.5 * (1 - np.abs(np.linspace(-1, 1, 17)) ** 4)
    return np.concatenate([pts, depth[:, None]], 1)


def _project(pts3, yaw, angle, scale, centre):
    x = pts3[:, 0] * np.cos(yaw) + pts3[:, 2] * np.sin(yaw)
    y = pts3[:, 1]
    ca, sa = np.cos(angle), np.sin(angle)
    return np.stack(
        [centre[0] + scale * (ca * x - sa * y), centre[1] + scale * (sa * x + ca * y)], 1
    )


def _colour(rng, lo=0, hi=255):
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def draw_face(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic photo (300, 300, 3) uint8 and its (194, 2) float32 landmarks."""
    shape3 = face_shape(rng)
    yaw, angle = np.radians(_u(rng, -25, 25)), np.radians(_u(rng, -30, 30))
    scale = _u(rng, 42, 75)
    centre = rng.uniform(SIZE * 0.35, SIZE * 0.65, 2)
    pts = _project(shape3, yaw, angle, scale, centre)
    # head outline (not landmarks): the jaw closed by a forehead arc
    t = np.linspace(0, np.pi, 20)
    jaw3 = shape3[:41]
    fy = jaw3[0, 1] - 1.2 * np.sin(t)
    forehead3 = np.stack([np.cos(t) * np.abs(jaw3[0, 0]), fy, 0.5 * np.sin(t)], 1)
    forehead = _project(forehead3, yaw, angle, scale, centre)
    neck3 = np.array([[-0.55, 0.6, 0], [0.55, 0.6, 0], [0.7, 3.0, 0], [-0.7, 3.0, 0]])
    neck = _project(neck3, yaw, angle, scale, centre)

    s = _SUPER
    img = Image.new("RGB", (SIZE * s, SIZE * s), _colour(rng))
    d = ImageDraw.Draw(img)
    P = lambda p: [tuple(q) for q in (np.asarray(p) * s - 0.5)]  # noqa: E731 (pixel corners)
    for _ in range(int(rng.integers(6, 14))):  # background clutter
        box = np.sort(rng.uniform(-20, SIZE + 20, (2, 2)), 0).T.ravel() * s
        kind = rng.integers(3)
        box = [box[0], box[2], box[1], box[3]]
        if kind == 0:
            d.ellipse(box, fill=_colour(rng))
        elif kind == 1:
            d.rectangle(box, fill=_colour(rng))
        else:
            d.line(box, fill=_colour(rng), width=int(rng.integers(2, 12)) * s)
    tone = np.array([_u(rng, 90, 250), 0, 0])
    tone[1], tone[2] = tone[0] * _u(rng, 0.65, 0.85), tone[0] * _u(rng, 0.45, 0.7)
    skin = tuple(int(v) for v in tone)
    shade = tuple(int(v * 0.7) for v in tone)
    hair = _colour(rng, 10, 120)
    d.polygon(P(neck), fill=shade)
    hair_outline = _project(forehead3 * [1.15, 1.0, 1] + [0, -0.15, 0], yaw, angle, scale, centre)
    d.polygon(P(np.concatenate([hair_outline, pts[[40, 0]]])), fill=hair)
    d.polygon(P(np.concatenate([pts[:41], forehead])), fill=skin)
    for g in (slice(154, 174), slice(174, 194)):  # brows
        d.polygon(P(pts[g]), fill=hair)
    iris = _colour(rng, 20, 160)
    for g in (slice(114, 134), slice(134, 154)):  # eyes
        e = pts[g]
        d.polygon(P(e), fill=(235, 235, 230))
        c, r = e.mean(0), 0.45 * np.ptp(e[:, 1]) + 0.5
        d.ellipse(P([c - r, c + r]), fill=iris)
        d.ellipse(P([c - r / 2.5, c + r / 2.5]), fill=(10, 10, 10))
        d.line(P(np.concatenate([e, e[:1]])), fill=(30, 20, 20), width=2 * s)
    nose = pts[41:58]
    d.line(P(nose), fill=shade, width=2 * s, joint="curve")
    for k in (45, 53):  # nostrils
        c = (nose[k - 41] + nose[8]) / 2
        d.ellipse(P([c - 2, c + 2]), fill=tuple(int(v * 0.4) for v in tone))
    lip = (int(_u(rng, 120, 200)), int(_u(rng, 30, 90)), int(_u(rng, 40, 100)))
    d.polygon(P(pts[58:86]), fill=lip)
    d.polygon(P(pts[86:114]), fill=(60, 10, 20))
    d.line(P(np.concatenate([pts[86:114], pts[86:87]])), fill=(60, 10, 20), width=s)
    img = img.reduce(s)
    blur = _u(rng, -0.5, 1.5)
    if blur > 0.2:
        img = img.filter(ImageFilter.GaussianBlur(blur))

    # lighting (a brightness ramp in a random direction) and sensor noise
    a = np.asarray(img, dtype=np.float32)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction)
    ramp = np.float32(_u(rng, 0.6, 1.3)) * (
        1 + np.float32(_u(rng, 0, 0.8)) * (direction[0] * _XX + direction[1] * _YY)
    )
    noise = rng.standard_normal(a.shape, dtype=np.float32) * np.float32(_u(rng, 2, 12))
    a = a * ramp.astype(np.float32)[..., None] + noise
    return np.clip(a, 0, 255).astype(np.uint8), pts.astype(np.float32)


def synthetic_faces(n: int, split: str, seed: int = 0) -> Iterator[Sample]:
    """``n`` faces of the ``train`` or ``test`` split; face i depends only on (seed, split, i)."""
    return (e.load() for e in synthetic_entries(n, split, seed))


def synthetic_entries(n: int, split: str, seed: int = 0) -> list[Entry]:
    """The same faces as ``synthetic_faces``, as entries drawn when loaded."""
    if split not in _SPLIT_IDS:
        raise ValueError(f"synthetic split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")

    def load(i: int) -> Sample:
        image, landmarks = draw_face(np.random.default_rng([seed, _SPLIT_IDS[split], i]))
        return Sample(f"synth_{split}_{i:05d}", image, landmarks, f"synthetic(seed={seed})")

    return [
        Entry(f"synth_{split}_{i:05d}", f"synthetic(seed={seed}, {split} {i})", lambda i=i: load(i))
        for i in range(n)
    ]
