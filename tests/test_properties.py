"""Property-based tests (hypothesis) for the readers and the landmark transforms."""

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lmkit.study.augment import compose_warps, warp
from lmkit.data.prepare import crop_and_resize, crop_box
from lmkit.data.readers import read_helen_annotation, read_pts

coords = arrays(
    np.float32,
    st.tuples(st.integers(1, 80), st.just(2)),
    elements=st.floats(-5000, 5000, allow_nan=False, width=32),
)


@settings(max_examples=40, deadline=None)
@given(coords)
def test_pts_files_round_trip(tmp_path_factory, pts):
    f = tmp_path_factory.mktemp("pts") / "x.pts"
    f.write_text(
        f"version: 1\nn_points: {len(pts)}\n{{\n"
        + "\n".join(f"{x!r} {y!r}" for x, y in pts.tolist())
        + "\n}\n"
    )
    np.testing.assert_array_equal(read_pts(f), pts)


@settings(max_examples=40, deadline=None)
@given(coords, st.text("abcdefghij_0123456789", min_size=1, max_size=12))
def test_helen_annotations_round_trip(tmp_path_factory, pts, name):
    f = tmp_path_factory.mktemp("helen") / "1.txt"
    f.write_text(name + "\n" + "\n".join(f"{x!r} , {y!r}" for x, y in pts.tolist()) + "\n")
    got_name, got = read_helen_annotation(f)
    assert got_name == name
    np.testing.assert_array_equal(got, pts)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(40, 200),
    st.integers(40, 200),
    st.integers(3, 30),
    st.integers(16, 64),
    st.integers(0, 10_000),
)
def test_crop_and_resize_is_an_exact_invertible_mapping(h, w, k, size, seed):
    rng = np.random.default_rng(seed)
    pts = np.stack([rng.uniform(0.1 * w, 0.9 * w, k), rng.uniform(0.2 * h, 0.9 * h, k)], 1).astype(
        np.float32
    )
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    box = crop_box(pts, (h, w))
    assert 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h
    out, mapped = crop_and_resize(image, pts, box, size)
    assert out.shape == (size, size, 3)
    back = mapped / [size / (box[2] - box[0]), size / (box[3] - box[1])] + box[:2]
    np.testing.assert_allclose(back, pts, atol=1e-3)
    inside = (pts >= box[:2]).all(1) & (pts <= box[2:]).all(1)
    assert ((mapped[inside] >= -1e-3) & (mapped[inside] <= size + 1e-3)).all()


@settings(max_examples=60, deadline=None)
@given(
    st.floats(-0.6, 0.6),
    st.floats(0.8, 1.0),
    st.floats(0, 1),
    st.floats(0, 1),
    st.booleans(),
    st.integers(32, 256),
)
def test_warps_are_similarities_that_move_landmarks_consistently(angle, crop, ox, oy, flip, size):
    src = 300
    offset = torch.tensor([[ox, oy]], dtype=torch.float64) * (size - crop * size)
    m = compose_warps(
        torch.tensor([angle], dtype=torch.float64), offset, crop, src, size, torch.tensor([flip])
    )
    pts = torch.tensor([[[40.0, 50.0], [250.0, 60.0], [150.0, 280.0]]])
    _, moved = warp(torch.zeros(1, src, src, 3, dtype=torch.uint8), pts, m, size)
    # distances scale by size / (src * crop): a rotation, a crop and a resize, maybe a mirror
    d_in = torch.cdist(pts[0].double(), pts[0].double())
    d_out = torch.cdist(moved[0].double(), moved[0].double())
    torch.testing.assert_close(d_out, d_in * size / (src * crop), rtol=1e-4, atol=1e-3)
    # orientation: a flip mirrors, a rotation alone does not
    a, b, c = moved[0].double()
    cross = (b - a)[0] * (c - a)[1] - (b - a)[1] * (c - a)[0]
    assert (cross < 0) == flip
    back = torch.cat([moved[0].double(), torch.ones(3, 1, dtype=torch.float64)], 1) @ m[0].T
    torch.testing.assert_close(back[:, :2], pts[0].double(), atol=1e-3, rtol=0)
    assert math.isfinite(float(moved.abs().max()))
