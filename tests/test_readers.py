import numpy as np
import pytest

from lmkit.data.readers import read_300w, read_helen, read_pts
from tests.conftest import random_landmarks, write_image


def write_pts(path, pts, declared=None):
    lines = ["version: 1", f"n_points:  {declared if declared is not None else len(pts)}", "{"]
    lines += [f"{x:.3f} {y:.3f}" for x, y in pts] + ["}"]
    path.write_text("\n".join(lines) + "\n")


def test_300w_reader_reads_images_points_and_names(tmp_path):
    pts = {n: random_landmarks(68, seed=i) for i, n in enumerate(["b_face", "a_face"])}
    arrays = {}
    for i, (name, p) in enumerate(pts.items()):
        arrays[name] = write_image(tmp_path / "trainset" / f"{name}.png", seed=i)
        write_pts(tmp_path / "trainset" / f"{name}.pts", p)
    samples = list(read_300w(tmp_path, "train"))
    assert [s.name for s in samples] == ["a_face", "b_face"]  # sorted
    for s in samples:
        assert s.landmarks.shape == (68, 2)
        np.testing.assert_allclose(s.landmarks, pts[s.name], atol=1e-3)
        np.testing.assert_array_equal(s.image, arrays[s.name])


def test_300w_reader_reads_k_from_the_file(tmp_path):
    write_image(tmp_path / "testset" / "x.jpg")
    write_pts(tmp_path / "testset" / "x.pts", random_landmarks(5))
    (s,) = read_300w(tmp_path, "test")
    assert s.landmarks.shape == (5, 2)


def test_pts_with_wrong_count_names_the_file(tmp_path):
    f = tmp_path / "bad.pts"
    write_pts(f, random_landmarks(4), declared=68)
    with pytest.raises(ValueError, match=r"bad\.pts.*n_points 68.*4 points"):
        read_pts(f)


def test_pts_with_non_numeric_value_names_the_file_and_point(tmp_path):
    f = tmp_path / "bad.pts"
    f.write_text("version: 1\nn_points: 2\n{\n1 2\n3 oops\n}\n")
    with pytest.raises(ValueError, match=r"bad\.pts: point 1"):
        read_pts(f)


def test_300w_missing_image_is_an_error(tmp_path):
    (tmp_path / "trainset").mkdir()
    write_pts(tmp_path / "trainset" / "lonely.pts", random_landmarks(3))
    with pytest.raises(FileNotFoundError, match="lonely.pts: no image"):
        list(read_300w(tmp_path, "train"))


def test_helen_reader_official_layout(tmp_path):
    names = ["100_1", "200_2", "300_3"]
    pts = {}
    for i, n in enumerate(names):
        write_image(tmp_path / f"helen_{i % 2 + 1}" / f"{n}.jpg", seed=i)
        pts[n] = random_landmarks(194, seed=i)
        body = "\n".join(f"{x:.4f} , {y:.4f}" for x, y in pts[n])
        (tmp_path / "annotation").mkdir(exist_ok=True)
        (tmp_path / "annotation" / f"{i + 1}.txt").write_text(f"{n}\n{body}\n")
    (tmp_path / "trainnames.txt").write_text("100_1\n300_3\n")
    (tmp_path / "testnames.txt").write_text("200_2\n")
    train = list(read_helen(tmp_path, "train"))
    test = list(read_helen(tmp_path, "test"))
    assert [s.name for s in train] == ["100_1", "300_3"] and [s.name for s in test] == ["200_2"]
    for s in train + test:
        assert s.image.shape == (120, 100, 3)
        np.testing.assert_allclose(s.landmarks, pts[s.name], atol=1e-4)


def test_helen_name_without_annotation_is_an_error(tmp_path):
    (tmp_path / "annotation").mkdir()
    (tmp_path / "trainnames.txt").write_text("ghost\n")
    with pytest.raises(ValueError, match="'ghost' has no annotation"):
        list(read_helen(tmp_path, "train"))


def test_two_images_for_one_annotation_are_refused_and_unannotated_images_listed(tmp_path):
    from lmkit.data.prepare import write_cache
    from lmkit.data.readers import entries_300w_folder, write_pts

    from tests.conftest import random_landmarks, write_image

    for name in ("a", "dup"):
        write_image(tmp_path / f"{name}.jpg")
        write_pts(random_landmarks(68), tmp_path / f"{name}.pts")
    write_image(tmp_path / "dup.png")
    write_image(tmp_path / "lonely.JPG")  # upper-case suffixes are images too
    write_image(tmp_path / "b.PNG")
    write_pts(random_landmarks(68), tmp_path / "b.pts")
    entries = entries_300w_folder(tmp_path)
    with pytest.raises(
        ValueError, match=r"dup\.pts: several images share its name \(dup\.jpg, dup\.png\)"
    ):
        write_cache(entries, tmp_path / "cache", {"source": "300w"})
    split = write_cache(entries, tmp_path / "cache", {"source": "300w"}, on_bad_sample="skip")
    assert split.names == ["a", "b"]
    assert [s["name"] for s in split.manifest["skipped"]] == ["dup"]
    assert split.manifest["unannotated"] == [str(tmp_path / "lonely.JPG")]


def test_an_unannotated_photo_in_a_training_folder_is_said_on_the_console(tmp_path, monkeypatch):
    """A photo without its .pts is listed in the manifest and said as a progress event (what lmkit
    run's console shows), not only in the notebook's output."""
    import json

    from lmkit.data.prepare import prepare
    from lmkit.data.readers import write_pts
    from lmkit.run import params as P
    from lmkit.run.progress import ENV

    from tests.conftest import random_landmarks, write_image

    for split, names in (("trainset", "ab"), ("testset", "cd")):
        for name in names:
            write_image(tmp_path / "data" / split / f"{name}.jpg")
            write_pts(random_landmarks(68), tmp_path / "data" / split / f"{name}.pts")
    write_image(tmp_path / "data" / "trainset" / "lonely.jpg")
    events = tmp_path / "progress.jsonl"
    monkeypatch.setenv(ENV, str(events))
    said = []
    prepare(
        P.load(None, {"data.source": "300w", "data.root": str(tmp_path / "data")}).data,
        0,
        tmp_path / "cache",
        said.append,
    )
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert any(
        e["kind"] == "skipped"
        and "1 images have no annotation" in e["message"]
        and "lonely.jpg" in e["message"]
        for e in lines
    ), lines
