import numpy as np
import pytest
import torch

from lmkit.study.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    make_batch,
    random_warps,
    resize_warps,
    warp,
)
from lmkit.study.modelinfo import view_fraction
from tests.blobs import blob_image, find_dot

PTS = np.array([[60, 70], [230, 80], [150, 150], [90, 230], [220, 220]], np.float32)


def _batch(n=4):
    img = torch.from_numpy(blob_image(300, 300, PTS, sigma=3.5)).repeat(n, 1, 1, 1)
    return img, torch.from_numpy(PTS).repeat(n, 1, 1)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_landmarks_move_with_the_pixels_under_random_warps(flip):
    images, pts = _batch()
    g = torch.Generator().manual_seed(1)
    m, flipped = random_warps(
        4, 300, 128, Augment(rotation=20, crop_fraction=245 / 256, flip=flip), g
    )
    assert bool(flipped.all()) == (flip == 1.0)
    assert ((torch.linalg.det(m) < 0) == flipped).all()  # a flip reverses orientation
    out, moved = warp(images, pts, m, 128)
    assert out.shape == (4, 3, 128, 128)
    angles = torch.rad2deg(torch.atan2(m[:, 1, 0], m[:, 0, 0]))
    assert angles.abs().max() > 3  # the warps really rotate
    gray = out[:, 0].numpy()
    for b in range(4):
        for p in moved[b].numpy():
            if 5 < p.min() and p.max() < 123:
                assert np.abs(find_dot(gray[b], p, radius=5) - p).max() < 0.4


def test_evaluation_transform_is_a_plain_resize():
    images, pts = _batch(1)
    out, moved = warp(images, pts, resize_warps(1, 300, 100), 100)
    np.testing.assert_allclose(moved[0].numpy(), PTS / 3, atol=1e-5)
    p = moved[0, 2].numpy()
    assert np.abs(find_dot(out[0, 0].numpy(), p, radius=4) - p).max() < 0.3


def test_the_centred_view_is_the_middle_of_the_crop_resized():
    images, pts = _batch(1)
    out, moved = warp(images, pts, resize_warps(1, 300, 100, view=0.8), 100)
    np.testing.assert_allclose(
        moved[0].numpy(), (PTS - 30) / 2.4, atol=1e-5
    )  # 240 px from (30, 30) to 100 px
    for p in moved[0].numpy():
        if 5 < p.min() and p.max() < 95:
            assert np.abs(find_dot(out[0, 0].numpy(), p, radius=4) - p).max() < 0.3
    np.testing.assert_array_equal(resize_warps(2, 300, 100, view=1.0), resize_warps(2, 300, 100))


def test_the_train_mean_view_is_the_mean_training_crop():
    assert view_fraction("whole", 0.9, (0.8, 1.0)) == 1.0
    assert view_fraction("train-mean", 0.9, (0.8, 1.0)) == pytest.approx(0.81)
    assert view_fraction("train-mean", 245 / 256, (1.0, 1.0)) == pytest.approx(245 / 256)
    with pytest.raises(ValueError, match="model.view"):
        view_fraction("middle", 0.9, (1.0, 1.0))


def test_make_batch_normalizes_and_intensity_stays_in_range():
    images = torch.full((8, 40, 40, 3), 128, dtype=torch.uint8)
    pts = torch.full((8, 3, 2), 20.0)
    x, _ = make_batch(images, pts, 40)
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(x[:, :, 20, 20], expected.expand(8, 3), atol=1e-4, rtol=0)
    xa, _ = make_batch(
        images,
        pts,
        40,
        Augment(rotation=0, crop_fraction=1.0, intensity=(0.5, 1.5)),
        torch.Generator().manual_seed(0),
    )
    raw = xa[:, 0, 20, 20] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    factors = raw / (128 / 255)
    assert factors.min() >= 0.5 - 1e-4 and factors.max() <= 1.5 + 1e-4 and factors.std() > 0.05
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_same_generator_seed_gives_the_same_augmentation():
    images, pts = _batch(2)
    a = make_batch(images, pts, 64, Augment(), torch.Generator().manual_seed(5))
    b = make_batch(images, pts, 64, Augment(), torch.Generator().manual_seed(5))
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_flipped_batches_renumber_points_by_the_mirror_map():
    images, _ = _batch(2)
    pts = torch.tensor([[[60.0, 70.0], [230.0, 80.0]]]).repeat(
        2, 1, 1
    )  # point 0 left, point 1 right
    aug = Augment(rotation=0, crop_fraction=1.0, intensity=(1, 1), flip=1.0, mirror=(1, 0))
    _, y = make_batch(images, pts, 300, aug, torch.Generator().manual_seed(0))
    # mirrored, the right-hand point (230 -> 70) is the new point 0, still on the left
    torch.testing.assert_close(
        y[0], torch.tensor([[300 - 230.0, 80.0], [300 - 60.0, 70.0]]), atol=1e-4, rtol=0
    )
    with pytest.raises(ValueError, match="mirror map"):
        make_batch(images, pts, 300, Augment(flip=1.0), torch.Generator().manual_seed(0))


def test_edge_jitter_moves_each_edge_of_the_crop_on_its_own():
    """train.edges: the left edge strays, the other three stay put, and pixels and landmarks
    still move together (the crop is stretched, as a detector's box resized to a square is)."""
    g = torch.Generator().manual_seed(0)
    aug = Augment(rotation=0, crop_fraction=1.0, intensity=(1, 1), edges=(0.1, 0.0, 0.0, 0.0))
    m = random_warps(2000, 300, 100, aug, g)[0]
    corners = torch.tensor([[0.0, 0.0, 1.0], [100.0, 100.0, 1.0]], dtype=torch.float64)
    src = (
        torch.einsum("bij,kj->bki", m, corners)[..., :2] / 300
    )  # crop edges in units of the source
    left, top, right, bottom = src[:, 0, 0], src[:, 0, 1], src[:, 1, 0], src[:, 1, 1]
    assert 0.09 < float(left.std()) < 0.1  # N(0, 0.1) clamped at 2 sigma: 0.096
    assert float(left.abs().max()) <= 0.2 + 1e-9
    for edge, where in ((top, 0.0), (right, 1.0), (bottom, 1.0)):
        assert torch.allclose(edge, torch.full_like(edge, where))
    images, pts = _batch()
    aug = Augment(rotation=15, crop_fraction=245 / 256, edges=(0.1, 0.07, 0.11, 0.045))
    m = random_warps(4, 300, 128, aug, torch.Generator().manual_seed(3))[0]
    assert not torch.allclose(
        m[:, 0, 0].abs() + m[:, 0, 1].abs(), m[:, 1, 1].abs() + m[:, 1, 0].abs()
    )  # x, y apart
    out, moved = warp(images, pts, m, 128)
    for b in range(4):
        for p in moved[b].numpy():
            if 5 < p.min() and p.max() < 123:
                assert np.abs(find_dot(out[b, 0].numpy(), p, radius=5) - p).max() < 0.4
