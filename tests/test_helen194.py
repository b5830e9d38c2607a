"""The study's own data: Helen's official layout with 194 points. The tests write a small
excerpt in the release's format (annotation files, name lists, photos) from faces that follow
the release's point order, and check the scheme, the reader's handling of the real release's
quirks and bad cases, and the study's crop."""

import numpy as np
import pytest

from lmkit.study import metrics
from lmkit.run import params as P
from lmkit.data.prepare import annotation_box, crop_box, prepare, write_cache
from lmkit.data.readers import entries_helen, helen_inventory
from lmkit.study.schemes import HELEN194, Scheme, check_mirror
from lmkit.data.synthetic import synthetic_faces


def write_helen(root, n_train=6, n_test=2, crlf=False, seed=0):
    """A Helen root in the release's layout: annotation/N.txt (the image name, then 194 lines
    'x , y'), trainnames.txt, testnames.txt, photos in helen_1/."""
    (root / "annotation").mkdir(parents=True)
    (root / "helen_1").mkdir()
    end = "\r\n" if crlf else "\n"
    names = {"train": [], "test": []}
    faces = list(synthetic_faces(n_train + n_test, "train", seed))
    for k, face in enumerate(faces):
        name = f"{1000 + k}_1"
        split = "train" if k < n_train else "test"
        names[split].append(name)
        from PIL import Image

        Image.fromarray(face.image).save(root / "helen_1" / f"{name}.jpg")
        rows = [name + ("  " if crlf else "")] + [
            f"{x:.2f} , {y:.2f}" + (" " if crlf else "") for x, y in face.landmarks
        ]
        (root / "annotation" / f"{k + 1}.txt").write_bytes((end.join(rows) + end).encode())
    for split, listed in names.items():
        (root / f"{split}names.txt").write_bytes((end.join(listed) + end).encode())
    return root, names


def test_the_scheme_fits_faces_read_from_release_files(tmp_path):
    """Groups, outer eye corners and mirror map, on faces read back from the release's format."""
    root, _ = write_helen(tmp_path / "helen", n_train=24, n_test=1)
    train = write_cache(entries_helen(root, "train"), tmp_path / "cache", {"source": "helen"})
    mean = metrics.mean_shape(train.landmarks)
    check_mirror(HELEN194, mean, 300)  # passes
    jaw, nose = HELEN194.group("jaw").indices, HELEN194.group("nose").indices
    assert (
        mean[jaw[0], 0] < mean[jaw[-1], 0] and mean[nose[0], 0] < mean[nose[-1], 0]
    )  # from the image's left
    a, b = HELEN194.group("eye_a").indices, HELEN194.group("eye_b").indices
    assert mean[a, 0].mean() > mean[b, 0].mean()  # the eye on the image's right comes first
    left, right = HELEN194.outer_eye_corners
    assert (
        left == b[int(np.argmin(mean[b, 0]))] and right == a[int(np.argmax(mean[a, 0]))]
    )  # the eyes' outer ends
    outer = HELEN194.group("outer_lips").indices
    assert (
        HELEN194.mirror[outer[0]] == 71 and HELEN194.mirror[72] == 85
    )  # corner to corner; the lower edge between


def test_a_wrong_mirror_map_is_still_refused(tmp_path):
    """The map lmkit had before the release was read (eyes paired the wrong way round)."""
    root, _ = write_helen(tmp_path / "helen", n_train=24, n_test=1)
    mean = metrics.mean_shape(
        write_cache(entries_helen(root, "train"), tmp_path / "cache", {"source": "helen"}).landmarks
    )
    m = list(HELEN194.mirror)
    for i in range(20):  # eye a's point i onto eye b's point 10 - i, as the old map had it
        m[114 + i], m[134 + (10 - i) % 20] = 134 + (10 - i) % 20, 114 + i
    wrong = Scheme(
        HELEN194.name,
        194,
        HELEN194.groups,
        HELEN194.left_eye,
        HELEN194.right_eye,
        HELEN194.outer_eye_corners,
        tuple(m),
    )
    with pytest.raises(
        ValueError,
        match=r"scheme helen194: its mirror map does not fit this data.*1[1-5]\d<->1[1-5]\d",
    ):
        check_mirror(wrong, mean, 300)


def test_crlf_line_ends_and_trailing_blanks_are_read(tmp_path):
    plain, _ = write_helen(tmp_path / "plain")
    crlf, _ = write_helen(tmp_path / "crlf", crlf=True)
    a = [e.load() for e in entries_helen(plain, "train")]
    b = [e.load() for e in entries_helen(crlf, "train")]
    assert [s.name for s in a] == [s.name for s in b]
    np.testing.assert_array_equal(
        np.stack([s.landmarks for s in a]), np.stack([s.landmarks for s in b])
    )


def test_a_listed_face_without_its_photo_is_an_error_or_a_listed_skip(tmp_path):
    root, names = write_helen(tmp_path / "helen")
    (root / "helen_1" / f"{names['train'][2]}.jpg").unlink()
    data = P.load(None, {"data.source": "helen", "data.root": str(root)}).data
    with pytest.raises(
        FileNotFoundError, match=rf"trainnames.txt: the photo of '{names['train'][2]}'"
    ):
        prepare(data, 0, tmp_path / "cache", lambda _: None)
    logs = []
    skip = data.model_copy(update={"on_bad_sample": "skip"})
    train = prepare(skip, 0, tmp_path / "cache2", logs.append)["train"]
    assert len(train) == len(names["train"]) - 1
    assert [s["name"] for s in train.manifest["skipped"]] == [names["train"][2]]
    assert train.manifest["inventory"] == {"listed": 6, "used": 5, "missing": 1}
    assert any("5 of 6 listed faces have their photo (1 missing)" in line for line in logs)


def test_an_annotation_with_another_point_count_names_its_file(tmp_path):
    root, _ = write_helen(tmp_path / "helen")
    f = root / "annotation" / "3.txt"
    f.write_text("\n".join(f.read_text().splitlines()[:-10]) + "\n")  # 184 points
    bad = [e for e in entries_helen(root, "train") if e.source == str(f)]
    with pytest.raises(ValueError, match=r"3\.txt: has 184 points, Helen's annotations have 194"):
        bad[0].load()


def test_a_name_listed_twice_or_annotated_twice_is_refused(tmp_path):
    root, names = write_helen(tmp_path / "helen")
    listed = root / "trainnames.txt"
    listed.write_text(listed.read_text() + names["train"][0] + "\n")
    with pytest.raises(
        ValueError,
        match=rf"trainnames.txt: 1 names are listed twice, e.g. \['{names['train'][0]}'\]",
    ):
        entries_helen(root, "train")
    root, names = write_helen(tmp_path / "helen2")
    (root / "annotation" / "99.txt").write_text((root / "annotation" / "1.txt").read_text())
    with pytest.raises(
        ValueError, match=rf"99\.txt: annotates '{names['train'][0]}', as .*1\.txt does already"
    ):
        entries_helen(root, "train")


def test_the_inventory_counts_a_release_held_only_in_part(tmp_path):
    """The release has more annotation files than a user may hold photos for."""
    root, names = write_helen(tmp_path / "helen")
    (root / "annotation" / "500.txt").write_text(
        "2000_1\n" + "1 , 2\n" * 194
    )  # annotated, no photo, not listed
    for name in names["test"]:
        (root / "helen_1" / f"{name}.jpg").unlink()
    inv = helen_inventory(root)
    assert inv == {
        "annotations": 9,
        "photos": 6,
        "train": {"listed": 6, "used": 6, "missing": 0},
        "test": {"listed": 2, "used": 0, "missing": 2},
    }


def study_crop_face(image_hw, landmarks, padding=5):
    """crop_face.py of the study, as its rows and columns (its code, restated)."""
    h, w = image_hw
    bottom, left, right = landmarks[:, 1].max(), landmarks[:, 0].min(), landmarks[:, 0].max()
    upper = landmarks[:, 1].min()
    temp = upper - (bottom - upper) / 3
    upper = temp if temp > 0 else padding
    row_min = int(upper) - padding if int(upper) - padding >= 0 else int(upper)
    row_max = int(bottom) + padding if int(bottom) + padding < h else int(bottom)
    col_min = int(left) - padding if int(left) - padding > 0 else int(left)
    col_max = int(right) + padding if int(right) + padding <= w else int(right)
    return (
        max(col_min, 0),
        max(row_min, 0),
        min(col_max, w),
        min(row_max, h),
    )  # numpy's slicing stops at the edges


@pytest.mark.parametrize(
    "shift", [(0, 0), (-60, 0), (0, -70), (45, 40)], ids=["inside", "left", "top", "right-bottom"]
)
def test_the_study_crop_is_crop_face_py(shift):
    """Whole-pixel edges, 5 photo pixels, and crop_face.py's clipping at every edge."""
    rng = np.random.default_rng(1)
    pts = rng.uniform([30.3, 60.7], [170.9, 230.2], (194, 2)) + shift
    hw = (250, 200)
    assert crop_box(pts, hw, 1 / 3, 5, "study") == tuple(float(v) for v in study_crop_face(hw, pts))
    x0, y0, x1, y1 = annotation_box(pts, 1 / 3, 5, "study")
    assert x0 == int(pts[:, 0].min()) - 5 and x1 == int(pts[:, 0].max()) + 5  # before clipping


def test_the_study_crop_records_its_margin_as_a_share_of_the_face(tmp_path):
    root, _ = write_helen(tmp_path / "helen")
    study = write_cache(
        entries_helen(root, "train"), tmp_path / "a", {"source": "helen"}, padding=5, box="study"
    )
    ours = write_cache(entries_helen(root, "train"), tmp_path / "b", {"source": "helen"})
    m = study.manifest["margin"]
    assert 4.0 <= m["pixels"] <= 6.0  # 5 px, give or take the whole-pixel edges and the clipping
    assert m["fraction_of_face"] == pytest.approx(m["pixels"] / m["face_pixels"], rel=0.2)
    assert ours.manifest["margin"]["fraction_of_face"] > m["fraction_of_face"]


def test_study_box_needs_whole_pixels_of_padding():
    with pytest.raises(P.ParamsError, match="data.padding: with data.box study it is whole pixels"):
        P.load(None, {"data.box": "study"})  # 0.05 of the box is not a number of pixels
    assert P.load(None, {"data.box": "study", "data.padding": 5}).data.padding == 5
