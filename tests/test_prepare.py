import json

import numpy as np
import pytest

from lmkit.data.prepare import (
    annotation_box,
    crop_and_resize,
    crop_box,
    load_cache,
    prepare,
    split_train_val,
    write_cache,
)
from lmkit.data.readers import Sample
from lmkit.study.schemes import HELEN194
from lmkit.data.synthetic import synthetic_entries
from tests.blobs import blob_image, find_dot


def test_crop_box_extends_upward_pads_and_clips():
    pts = np.array([[20, 40], [60, 100]], np.float32)  # box 40 wide, 60 tall
    # forehead: 60 / 3 = 20 up, so 80 tall; padding 0.05 * 80 = 4 on every side
    assert crop_box(pts, (200, 70), forehead=1 / 3, padding=0.05) == pytest.approx(
        (16, 16, 64, 104)
    )
    assert crop_box(pts, (90, 62), forehead=1 / 3, padding=0.05) == pytest.approx((16, 16, 62, 90))


def test_landmarks_follow_the_pixels_through_crop_and_resize():
    pts = np.array([[40.5, 50.5], [130.25, 60.0], [85.0, 170.75], [60.0, 120.0]], np.float32)
    image = blob_image(220, 180, pts)
    box = crop_box(pts, image.shape[:2])
    out, mapped = crop_and_resize(image, pts, box, 300)
    assert out.shape == (300, 300, 3)
    x0, y0, x1, y1 = box
    np.testing.assert_allclose(
        mapped, (pts - [x0, y0]) * [300 / (x1 - x0), 300 / (y1 - y0)], rtol=1e-6
    )
    for p in mapped:
        found = find_dot(out[..., 0], p, radius=9)
        assert np.abs(found - p).max() < 0.35, (found, p)


def _samples(n, k=5, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        yield Sample(
            f"s{i}",
            rng.integers(0, 255, (80, 90, 3), dtype=np.uint8),
            rng.uniform(15, 65, (k, 2)).astype(np.float32),
            f"mem{i}",
        )


def test_cache_round_trip(tmp_path):
    split = write_cache(_samples(4), tmp_path / "train", {"source": "test"}, size=32)
    again = load_cache(tmp_path / "train")
    assert again.images.shape == (4, 32, 32, 3) and again.images.dtype == np.uint8
    assert again.landmarks.dtype == np.float32 and again.names == ["s0", "s1", "s2", "s3"]
    assert again.manifest["count"] == 4 and again.manifest["crop_size"] == 32
    np.testing.assert_array_equal(split.landmarks, again.landmarks)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_empty_split_and_duplicate_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        write_cache([], tmp_path / "e", {"source": "test"})
    twice = list(_samples(2))
    twice[1].name = "s0"
    with pytest.raises(ValueError, match="duplicate sample name .s0."):
        write_cache(twice, tmp_path / "d", {"source": "test"})
    assert not (tmp_path / "d").exists()


def test_prepare_reuses_the_cache_when_parameters_match(tmp_path, tiny_params):
    data = tiny_params.data.model_copy(update={"synthetic_train": 6, "synthetic_test": 3})
    logs = []
    first = prepare(data, 0, tmp_path, logs.append)
    mtime = (tmp_path / "train" / "images.npy").stat().st_mtime_ns
    second = prepare(data, 0, tmp_path, logs.append)
    assert (
        any("reusing" in line for line in logs[2:])
        and (tmp_path / "train" / "images.npy").stat().st_mtime_ns == mtime
    )
    np.testing.assert_array_equal(first["train"].images, second["train"].images)
    logs.clear()
    prepare(data.model_copy(update={"padding": 0.1}), 0, tmp_path, logs.append)
    assert not any("reusing" in line for line in logs)
    logs.clear()
    prepare(data.model_copy(update={"padding": 0.1, "box": "eyes-mouth"}), 0, tmp_path, logs.append)
    assert any("preparing again: box changed" in line for line in logs)


def test_a_cache_made_before_data_box_existed_is_a_landmarks_box_cache(tmp_path, tiny_params):
    data = tiny_params.data.model_copy(update={"synthetic_train": 4, "synthetic_test": 2})
    prepare(data, 0, tmp_path, lambda _: None)
    for split in ("train", "test"):  # as lmkit wrote manifests before data.box
        manifest = json.loads((tmp_path / split / "manifest.json").read_text())
        del manifest["box"]
        (tmp_path / split / "manifest.json").write_text(json.dumps(manifest))
    logs = []
    prepare(data, 0, tmp_path, logs.append)
    assert sum("reusing" in line for line in logs) == 2
    logs.clear()
    prepare(data.model_copy(update={"box": "eyes-mouth"}), 0, tmp_path, logs.append)
    assert not any("reusing" in line for line in logs)


def test_the_eyes_mouth_box_ignores_the_jaw_and_frames_the_face_as_the_landmark_box_does():
    face = synthetic_entries(1, "train", 3)[0].load().landmarks.astype(np.float64)
    em = np.array(annotation_box(face, padding=0.0, box="eyes-mouth"))
    moved = face.copy()
    moved[HELEN194.group("jaw").indices] *= [1.3, 1.1]  # a wider, longer jaw: same eyes and mouth
    np.testing.assert_allclose(annotation_box(moved, padding=0.0, box="eyes-mouth"), em)
    assert annotation_box(moved, padding=0.0) != pytest.approx(
        annotation_box(face, padding=0.0)
    )  # the study's box follows the jaw
    shifted = face + [7.0, -3.0]  # the box moves with the face and scales with it
    np.testing.assert_allclose(
        annotation_box(shifted, padding=0.0, box="eyes-mouth"), em + [7, -3, 7, -3]
    )
    np.testing.assert_allclose(annotation_box(face * 2, padding=0.0, box="eyes-mouth"), em * 2)
    inside = (
        (face[:, 0] > em[0]) & (face[:, 0] < em[2]) & (face[:, 1] > em[1]) & (face[:, 1] < em[3])
    )
    assert inside.mean() > 0.95  # the same face framed
    with pytest.raises(ValueError, match="data.box"):
        annotation_box(face, box="chin")


def test_clean_split_shares_no_image_and_paper_split_does():
    clean = split_train_val(100, 0.2, seed=3)
    assert len(clean["val"]) == 20 and len(clean["train"]) == 80
    assert not set(clean["train"]) & set(clean["val"])
    assert sorted(clean["train"] + clean["val"]) == list(range(100))
    paper = split_train_val(100, 0.2, seed=3, protocol="paper")
    assert set(paper["val"]) <= set(paper["train"]) and paper["val"] == clean["val"]
    assert split_train_val(100, 0.2, seed=4)["val"] != clean["val"]
