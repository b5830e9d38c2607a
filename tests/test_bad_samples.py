"""Every kind of bad sample gets an error naming the file and the problem, or with
``on_bad_sample: skip`` a listed skip; a sample is never silently wrong."""

import numpy as np
import pytest
from PIL import Image

from lmkit.data.prepare import write_cache
from lmkit.data.readers import entries_300w_folder, load_image, read_300w_folder, read_helen
from tests.conftest import random_landmarks, write_image


def write_pts(path, pts):
    path.write_text(
        "version: 1\nn_points: %d\n{\n%s\n}\n" % (len(pts), "\n".join(f"{x} {y}" for x, y in pts))
    )


def face(folder, name, k=68, seed=0, suffix=".jpg"):
    write_image(folder / f"{name}{suffix}", seed=seed)
    write_pts(folder / f"{name}.pts", random_landmarks(k, seed=seed))


def one_error(folder, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        write_cache(entries_300w_folder(folder), folder.parent / "cache", {"source": "t"}, size=32)
    assert not (folder.parent / "cache").exists()  # nothing written half-way


def test_missing_image(tmp_path):
    face(tmp_path / "d", "a")
    write_pts(tmp_path / "d" / "b.pts", random_landmarks(68))
    one_error(tmp_path / "d", r"b\.pts: no image beside it")


def test_unreadable_image(tmp_path):
    face(tmp_path / "d", "a")
    write_pts(tmp_path / "d" / "b.pts", random_landmarks(68))
    (tmp_path / "d" / "b.jpg").write_bytes(b"this is not a JPEG")
    one_error(tmp_path / "d", r"b\.jpg: cannot decode image")


def test_truncated_image(tmp_path):
    face(tmp_path / "d", "a")
    face(tmp_path / "d", "b", seed=1)
    data = (tmp_path / "d" / "b.jpg").read_bytes()
    (tmp_path / "d" / "b.jpg").write_bytes(data[: len(data) // 2])
    one_error(tmp_path / "d", r"b\.jpg: cannot decode image .*truncated")


def test_wrong_number_of_points(tmp_path):
    face(tmp_path / "d", "a")
    face(tmp_path / "d", "b", k=67)
    face(tmp_path / "d", "c", seed=2)
    one_error(tmp_path / "d", r"b\.pts: has 67 points, the other samples have 68")


@pytest.mark.parametrize(
    "value,match",
    [
        ("abc", r"point 3 is not two numbers"),
        ("nan", "landmarks contain NaN or infinity"),
        ("inf", "landmarks contain NaN or infinity"),
    ],
)
def test_bad_numbers(tmp_path, value, match):
    face(tmp_path / "d", "a")
    pts = [f"{x} {y}" for x, y in random_landmarks(68)]
    pts[3] = f"{value} 10"
    (tmp_path / "d" / "a.pts").write_text(
        "version: 1\nn_points: 68\n{\n" + "\n".join(pts) + "\n}\n"
    )
    one_error(tmp_path / "d", r"a\.pts: " + match)


def test_points_far_outside_the_image(tmp_path):
    face(tmp_path / "d", "a")
    pts = random_landmarks(68)
    pts[5] = [900, 40]
    write_pts(tmp_path / "d" / "a.pts", pts)
    one_error(
        tmp_path / "d", r"a\.jpg: point 5 at \(900\.0, 40\.0\) lies far outside the 100x120 image"
    )


def test_duplicate_names_across_folders(tmp_path):
    face(tmp_path / "d" / "x", "same")
    face(tmp_path / "d" / "y", "same", seed=1)
    one_error(tmp_path / "d", r"duplicate sample name 'same'")


def test_skip_goes_on_and_lists_every_skip_with_its_reason(tmp_path):
    face(tmp_path / "d", "good")
    face(tmp_path / "d", "good2", seed=3)
    face(tmp_path / "d", "few", k=5, seed=2)
    write_pts(tmp_path / "d" / "lonely.pts", random_landmarks(68))
    split = write_cache(
        entries_300w_folder(tmp_path / "d"),
        tmp_path / "cache",
        {"source": "t"},
        size=32,
        on_bad_sample="skip",
    )
    assert split.names == ["good", "good2"]
    skipped = {s["name"]: s["reason"] for s in split.manifest["skipped"]}
    assert set(skipped) == {"few", "lonely"}
    assert "few.pts: has 5 points" in skipped["few"] and "no image beside it" in skipped["lonely"]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_image_modes_become_rgb(tmp_path, mode):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    im = Image.fromarray(rgb).convert(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    im.save(path)
    out = load_image(path)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(out, expected)
    if mode == "L":
        assert (out[..., 0] == out[..., 1]).all()


def test_16_bit_images_keep_their_top_8_bits(tmp_path):
    a = (np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 50).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    out = load_image(tmp_path / "deep.png")
    assert out.shape == (40, 30, 3)
    np.testing.assert_array_equal(out[..., 0], (a >> 8).astype(np.uint8))


def test_exif_orientation_is_not_applied(tmp_path):
    """Helen and 300-W annotate the stored pixels, so the stored pixels are what we read."""
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :10] = 255  # a white band on the left of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "rot.jpg")
    assert out.shape == (20, 40, 3) and out[:, :8].mean() > 200 and out[:, 12:].mean() < 50


def test_helen_name_in_both_train_and_test_lists(tmp_path):
    from lmkit.run import params as P
    from lmkit.data.prepare import prepare

    for i, n in enumerate(["a", "b", "c"]):
        write_image(tmp_path / "helen_1" / f"{n}.jpg", seed=i)
        body = "\n".join(f"{x} , {y}" for x, y in random_landmarks(194, seed=i))
        (tmp_path / "annotation").mkdir(exist_ok=True)
        (tmp_path / "annotation" / f"{i}.txt").write_text(f"{n}\n{body}\n")
    (tmp_path / "trainnames.txt").write_text("a\nb\n")
    (tmp_path / "testnames.txt").write_text("b\nc\n")
    data = P.load(None, {"data.source": "helen", "data.root": str(tmp_path)}).data
    with pytest.raises(
        ValueError, match=r"1 names are in both the train and the test split, e.g. \['b'\]"
    ):
        prepare(data, 0, tmp_path / "cache", lambda _: None)
    out = prepare(
        data.model_copy(update={"on_bad_sample": "skip"}), 0, tmp_path / "cache", lambda _: None
    )
    assert out["train"].names == ["a"] and out["test"].names == ["b", "c"]
    assert "also in the test split" in out["train"].manifest["skipped"][0]["reason"]
    assert list(read_helen(tmp_path, "test"))[0].name == "b"


def test_empty_split(tmp_path):
    with pytest.raises(ValueError, match="no .pts annotation files"):
        list(read_300w_folder(tmp_path))
