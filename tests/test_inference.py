"""A trained run as a landmark detector: the model file, Landmarker, lmkit predict, export."""

import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lmkit.run import params as P
from tests.study import steps
from lmkit.use.detector import DETECTORS, BoxCalibration, HogDetector, hog_name, to_units
from lmkit.use.export import export
from lmkit.use.inference import Landmarker, as_rgb, predict_files, read_boxes
from lmkit.study.model import load_model_file, predict, save_model_file
from lmkit.cli import main
from lmkit.data.prepare import annotation_box, crop_and_resize, crop_box
from lmkit.data.readers import read_pts
from lmkit.run.folder import RunFolder
from lmkit.study.schemes import HELEN194, check_mirror
from lmkit.data.synthetic import synthetic_entries

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "helen68" / "testset"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run on synthetic faces, trained through the notebook steps (no search)."""
    run = RunFolder(tmp_path_factory.mktemp("run"))
    params = P.load(None, {**TINY, "search.enabled": False})
    steps.prepare(run, params, log=lambda _: None)
    steps.hpsearch(run, params, log=lambda _: None)
    steps.train(run, params, log=lambda _: None)
    return run, params


@pytest.fixture(scope="module")
def photo():
    """A synthetic photo with its 194 landmarks, as a user's photo would be (not a crop)."""
    return synthetic_entries(1, "test", 7)[0].load()


def with_calibration(
    run, tmp_path, box=(-0.1, -0.3, 1.1, 1.1), detector="dlib HOG frontal face detector"
):
    """The run's model file with a box calibration, as real training photos would give."""
    model, info = load_model_file(run.model_file)
    cal = BoxCalibration(detector, box, 10, 12, (0.0, 0.0, 0.0, 0.0)).to_dict()
    return save_model_file(
        model, dataclasses.replace(info, box_calibration=cal), tmp_path / "model.pt"
    )


def test_model_file_describes_itself_and_is_small(trained):
    run, params = trained
    model, info = load_model_file(run.model_file)
    assert run.model_file.stat().st_size < 50e6
    assert (info.scheme, info.n_points, info.input_size, info.crop_size) == (
        "helen194",
        194,
        32,
        300,
    )
    assert info.forehead == pytest.approx(1 / 3) and info.padding == pytest.approx(0.05)
    assert np.asarray(info.mean_shape).shape == (194, 2) and info.box_calibration is None
    assert info.normalization["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert "synthetic" in info.dataset and info.lmkit_version


def test_a_checkpoint_is_not_taken_for_a_model_file(trained):
    run, _ = trained
    with pytest.raises(ValueError, match="not an lmkit model file.*checkpoint"):
        load_model_file(run.best_checkpoint)


def test_evaluation_refuses_params_that_describe_another_model(trained):
    run, params = trained
    other = P.merge(params, {"model.input_size": 48})
    with pytest.raises(
        ValueError, match=r"model.input_size is 48 in the params but 32 in the model file"
    ):
        steps.evaluate(run, other, log=lambda _: None)


def test_predict_on_a_photo_equals_the_model_on_its_annotation_crop(trained, photo):
    """Cutting the crop out of the photo and mapping back gives the evaluation's points."""
    run, _ = trained
    lm = Landmarker.load(run.root, device="cpu", backend="torch")
    box = crop_box(photo.landmarks, photo.image.shape[:2])
    (face,) = lm.predict(photo.image, [box], box="crop")
    crop, _ = crop_and_resize(photo.image, photo.landmarks, box, 300)
    in_crop = predict(lm.network.model, crop[None], 32)[0]
    expected = in_crop * [(box[2] - box[0]) / 300, (box[3] - box[1]) / 300] + box[:2]
    np.testing.assert_allclose(face.points, expected, atol=1e-3)
    assert face.points.shape == (194, 2) and face.box is None


def test_image_kinds_path_pil_rgba_and_grey(trained, photo, tmp_path):
    run, _ = trained
    lm = Landmarker.load(run.root, device="cpu")
    box = crop_box(photo.landmarks, photo.image.shape[:2])
    Image.fromarray(photo.image).save(tmp_path / "p.png")
    rgba = np.concatenate([photo.image, np.full(photo.image.shape[:2] + (1,), 255, np.uint8)], 2)
    ref = lm.predict(photo.image, [box], box="crop")[0].points
    for image in (tmp_path / "p.png", str(tmp_path / "p.png"), Image.fromarray(photo.image), rgba):
        np.testing.assert_allclose(lm.predict(image, [box], box="crop")[0].points, ref, atol=1e-4)
    grey = photo.image.mean(2).astype(np.uint8)
    assert as_rgb(grey).shape == photo.image.shape and lm.predict(grey, [box], box="crop")[
        0
    ].points.shape == (194, 2)
    with pytest.raises(TypeError, match="uint8"):
        as_rgb(photo.image.astype(np.float32))


def test_batched_over_photos_and_faces(trained, photo):
    run, _ = trained
    lm = Landmarker.load(run.root, device="cpu", batch_size=2)
    box = crop_box(photo.landmarks, photo.image.shape[:2])
    shifted = (box[0] + 5, box[1], box[2] + 5, box[3])
    many = lm.predict_many(
        [(photo.image, [box, shifted]), (photo.image, []), (photo.image, [shifted])], box="crop"
    )
    assert [len(f) for f in many] == [2, 0, 1]
    np.testing.assert_allclose(many[0][1].points, many[2][0].points, atol=1e-4)
    np.testing.assert_allclose(
        many[0][0].points, lm.predict(photo.image, [box], box="crop")[0].points, atol=1e-4
    )


def test_detector_boxes_go_through_the_calibration(trained, photo, tmp_path):
    run, _ = trained
    det_box = (40.0, 60.0, 200.0, 220.0)
    lm = Landmarker.load(
        with_calibration(run, tmp_path), device="cpu", detector=lambda image: [det_box]
    )
    (face,) = lm.detect(photo.image)
    assert face.box == det_box
    assert face.crop_box == pytest.approx(
        (40 - 16, 60 - 48, 200 + 16, 220 + 16)
    )  # -0.1, -0.3, 1.1, 1.1 of 160
    crop_only = lm.predict(photo.image, [face.crop_box], box="crop")[0]
    np.testing.assert_allclose(face.points, crop_only.points, atol=1e-4)


def test_recrop_cuts_the_face_again_from_the_points_found_by_the_training_convention(
    trained, photo, tmp_path
):
    """recrop=1: the crop box is the one the first pass's points give (prepare.crop_box), and the
    points are the model on that crop; recrop=2 goes on from the second pass's points."""
    run, _ = trained
    det_box = (40.0, 60.0, 200.0, 220.0)
    path = with_calibration(run, tmp_path)
    passes = {
        r: Landmarker.load(path, device="cpu", detector=lambda image: [det_box], recrop=r)
        for r in (0, 1, 2)
    }
    (first,), (second,), (third,) = (passes[r].detect(photo.image) for r in (0, 1, 2))
    info = passes[0].info
    again = crop_box(first.points, photo.image.shape[:2], info.forehead, info.padding, info.box)
    assert second.box == det_box and second.crop_box == pytest.approx(again)
    assert second.crop_box != pytest.approx(first.crop_box)
    np.testing.assert_allclose(
        second.points, passes[0].predict(photo.image, [again], box="crop")[0].points, atol=1e-4
    )
    assert third.crop_box == pytest.approx(
        crop_box(second.points, photo.image.shape[:2], info.forehead, info.padding, info.box)
    )
    # crop boxes from the caller are used as given, whatever recrop says
    np.testing.assert_allclose(
        passes[2].predict(photo.image, [again], box="crop")[0].points, second.points, atol=1e-4
    )
    with pytest.raises(ValueError, match="recrop must be 0 or more"):
        Landmarker.load(path, device="cpu", recrop=-1)


def test_the_model_file_carries_recrop_and_evaluation_refuses_params_that_say_otherwise(
    trained, tmp_path
):
    run, params = trained
    copy = RunFolder(tmp_path / "run")
    shutil.copytree(run.root, copy.root)
    steps.package_model(copy, P.merge(params, {"model.recrop": 2}), log=lambda _: None)
    assert load_model_file(copy.model_file)[1].recrop == 2
    assert (
        Landmarker.load(copy.root, device="cpu").recrop == 2
        and Landmarker.load(copy.root, recrop=0).recrop == 0
    )
    with pytest.raises(
        ValueError, match=r"model.recrop is 0 in the params but 2 in the model file"
    ):
        steps.evaluate(copy, params, log=lambda _: None)


def test_without_calibration_detect_says_so_and_predict_with_crop_boxes_works(trained, photo):
    run, _ = trained
    lm = Landmarker.load(run.root, device="cpu", detector=lambda image: [(1, 1, 50, 50)])
    with pytest.raises(ValueError, match="no box calibration.*box='crop'"):
        lm.detect(photo.image)


def test_no_face_found_gives_an_empty_list(trained, photo, tmp_path):
    run, _ = trained
    lm = Landmarker.load(with_calibration(run, tmp_path), device="cpu", detector=lambda image: [])
    assert lm.detect(photo.image) == []


def test_box_calibration_recovers_a_known_mapping():
    rng = np.random.default_rng(0)
    det = rng.uniform(50, 100, (30, 2))
    det = np.concatenate([det, det + rng.uniform(80, 120, (30, 1))], 1)
    truth = np.array([-0.05, -0.3, 1.07, 1.1])
    w = (det[:, 2] - det[:, 0])[:, None]
    crop = det[:, [0, 1, 0, 1]] + truth * w
    crop[:3] += 40  # a few bad pairs: the median ignores them
    cal = BoxCalibration.fit(det, crop, "fake", 35)
    np.testing.assert_allclose(cal.box, truth, atol=1e-9)
    assert (cal.faces, cal.photos) == (30, 35)
    np.testing.assert_allclose(cal.crop_boxes(det[3:]), crop[3:], atol=1e-9)
    np.testing.assert_allclose(to_units(crop[3:], det[3:]), np.tile(truth, (27, 1)), atol=1e-9)
    assert BoxCalibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError, match="no training face"):
        BoxCalibration.fit(np.zeros((0, 4)), np.zeros((0, 4)), "fake", 10)


def test_calibrate_pairs_each_face_with_the_overlapping_detection():
    from lmkit.use.detector import calibrate

    pts = np.array([[100.0, 120.0], [180.0, 200.0], [140.0, 150.0]])
    face = (95.0, 110.0, 185.0, 205.0)
    elsewhere = (400.0, 400.0, 450.0, 450.0)
    cal = calibrate(lambda image: [elsewhere, face], [(None, pts), (None, pts + 1000)], 1 / 3, 0.05)
    assert (cal.faces, cal.photos) == (1, 2)
    np.testing.assert_allclose(cal.crop_boxes([face])[0], annotation_box(pts), atol=1e-9)


def test_mirror_check_refuses_a_wrong_map(trained):
    run, _ = trained
    _, info = load_model_file(run.model_file)
    mean = np.asarray(info.mean_shape)
    check_mirror(HELEN194, mean, 300)  # lmkit's own faces follow its map
    wrong = list(HELEN194.mirror)
    for k in range(
        20
    ):  # each eye's point k paired with the other eye's point 10 - k: not how the faces are traced
        wrong[114 + k], wrong[134 + (10 - k) % 20] = 134 + (10 - k) % 20, 114 + k
    with pytest.raises(
        ValueError,
        match=r"scheme helen194: its mirror map does not fit.*worst points: 1[1-5]\d<->1[1-5]\d ",
    ):
        check_mirror(dataclasses.replace(HELEN194, mirror=tuple(wrong)), mean, 300)


def test_flip_test_is_the_average_of_the_prediction_and_the_unmirrored_mirror_prediction(
    trained, photo
):
    run, _ = trained
    model, _ = load_model_file(run.model_file)
    box = crop_box(photo.landmarks, photo.image.shape[:2])
    crop, _ = crop_and_resize(photo.image, photo.landmarks, box, 300)
    plain = predict(model, crop[None], 32)[0]
    mirrored = predict(model, np.ascontiguousarray(crop[None, :, ::-1]), 32)[0][
        list(HELEN194.mirror)
    ]
    mirrored[:, 0] = 300 - mirrored[:, 0]
    both = predict(model, crop[None], 32, flip_mirror=HELEN194.mirror)[0]
    np.testing.assert_allclose(both, (plain + mirrored) / 2, atol=1e-3)
    assert np.abs(both - plain).max() > 1e-3  # it did change something


def with_view(run, tmp_path, view=0.9):
    """The run's model file seeing the centre ``view`` of each crop, with a bias correction."""
    model, info = load_model_file(run.model_file)
    correction = np.random.default_rng(3).normal(0, 2, (info.n_points, 2)).round(3).tolist()
    return save_model_file(
        model, dataclasses.replace(info, view=view, correction=correction), tmp_path / "view.pt"
    )


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("kind", ["whole crop", "centred view and correction"])
def test_export_agrees_with_the_model(trained, tmp_path, fmt, kind):
    run, _ = trained
    source = run.root if kind == "whole crop" else with_view(run, tmp_path)
    out = export(source, fmt, tmp_path / f"model.{fmt}")
    model, info = load_model_file(run.model_file if kind == "whole crop" else source)
    crops = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    expected = predict(
        model, crops, 32, view=info.view, correction=info.correction
    )  # pixels of the 32x32 crops
    if kind != "whole crop":
        assert (
            np.abs(expected - predict(model, crops, 32)).max() > 0.5
        )  # the view and correction change the points
    if fmt == "torchscript":
        with torch.no_grad():
            got = torch.jit.load(str(out))(torch.from_numpy(crops)).numpy()
    else:
        ort = pytest.importorskip("onnxruntime")
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
            None, {"crops": crops}
        )[0]
    assert got.shape == (3, 194, 2)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    if fmt == "torchscript":  # the file says what it is
        extra = {"lmkit.json": ""}
        torch.jit.load(str(out), _extra_files=extra)
        about = json.loads(extra["lmkit.json"])
    else:
        onnx = pytest.importorskip("onnx")
        about = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        about["input_size"], about["n_points"] = int(about["input_size"]), int(about["n_points"])
    assert about["scheme"] == "helen194" and about["n_points"] == 194 and about["input_size"] == 32
    assert about["crop_box"] == info.box and "crops (batch, 32, 32, 3)" in about["input"]


class ConstantNet(torch.nn.Module):
    """Always the same points, in the 256 frame of the network input."""

    def __init__(self, points):
        super().__init__()
        self.points, self.n_points = torch.as_tensor(points, dtype=torch.float32), len(points)
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.points.expand(x.shape[0], -1, -1) + 0 * self.anchor


def test_a_centred_view_maps_points_back_to_the_whole_crop_and_the_correction_is_subtracted():
    q = np.array([[0.0, 0.0], [128.0, 128.0], [256.0, 64.0]])
    crops = np.zeros((2, 300, 300, 3), np.uint8)
    correction = np.array([[1.0, -2.0], [0.0, 0.0], [2.56, 0.0]])
    got = predict(ConstantNet(q), crops, 64, view=0.8, correction=correction)
    # the view is the centred square of 240 px: it starts at 30 px; 256-frame -> crop: x 240/256
    want = 30 + q * 240 / 256 - correction * 300 / 256
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), atol=1e-4)
    np.testing.assert_allclose(
        predict(ConstantNet(q), crops, 64), np.broadcast_to(q * 300 / 256, got.shape), atol=1e-4
    )


def test_bias_correction_is_each_points_mean_validation_error(trained, tmp_path):
    run, params = trained
    copy = RunFolder(tmp_path / "run")
    shutil.copytree(run.root, copy.root)
    wanted = P.merge(params, {"model.view": "train-mean", "model.bias_correction": True})
    steps.package_model(copy, wanted, log=lambda _: None)
    model, info = load_model_file(copy.model_file, settings=P.flatten(wanted))
    assert info.view == pytest.approx(245 / 256)
    d = steps.load_data(copy, wanted)
    before = predict(model, d.val.images, 32, view=info.view)
    error = (before - np.asarray(d.val.landmarks)).mean(0) * 256 / 300
    np.testing.assert_allclose(info.correction, error, atol=1e-3)
    after = predict(model, d.val.images, 32, view=info.view, correction=info.correction)
    assert (
        np.abs((after - np.asarray(d.val.landmarks)).mean(0)).max() < 1e-2
    )  # no mean error left on validation
    with pytest.raises(ValueError, match=r"model.view is 'whole' in the params.*the centre 0.957"):
        steps.evaluate(copy, P.merge(wanted, {"model.view": "whole"}), log=lambda _: None)
    with pytest.raises(
        ValueError, match=r"model.bias_correction is False in the params but the model file has a "
    ):
        steps.evaluate(copy, P.merge(wanted, {"model.bias_correction": False}), log=lambda _: None)


def test_predict_files_writes_pts_csv_png_and_lists_bad_files(trained, photo, tmp_path):
    run, _ = trained
    lm = Landmarker.load(
        with_calibration(run, tmp_path),
        device="cpu",
        detector=lambda image: [(30.0, 40.0, 150.0, 170.0), (10.0, 10.0, 60.0, 60.0)],
    )
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(photo.image).save(photos / f"face{i}.jpg")
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    (photos / "notes.txt").write_text("a note")
    (photos / "face0.png").write_bytes((photos / "face0.jpg").read_bytes())
    out = tmp_path / "out"
    result = predict_files(
        lm, [photos, tmp_path / "missing.jpg"], out, log=lambda _: None, progress=False
    )
    assert result["processed"] == 3 and result["faces"] == 6
    reasons = dict(result["failures"])
    assert "cannot decode image" in reasons[str(photos / "broken.jpg")]
    assert (
        "same name" in reasons[str(photos / "face0.png")]
        and "no such file" in reasons[str(tmp_path / "missing.jpg")]
    )
    assert result["ignored"] == [str(photos / "notes.txt")]
    first = lm.detect(photos / "face1.jpg")
    np.testing.assert_allclose(
        read_pts(out / "face1.pts"), first[0].points, atol=1e-3
    )  # .pts round trip
    np.testing.assert_allclose(read_pts(out / "face1_2.pts"), first[1].points, atol=1e-3)
    import pandas as pd

    table = pd.read_csv(out / "points.csv")
    assert len(table) == 6 * 194 and set(table["face"]) == {1, 2}
    assert Image.open(out / "face2.png").size == photo.image.shape[1::-1]
    assert len(pd.read_csv(out / "failures.csv")) == 3
    assert not list(out.glob(".*"))  # no temporary file left


def test_command_exit_codes(trained, tmp_path, capsys):
    run, _ = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"nope")
    calibrated = with_calibration(run, tmp_path)
    assert (
        main(["predict", str(calibrated), str(bad), "--out", str(tmp_path / "o")]) == 1
    )  # nothing processed
    assert "cannot decode" in capsys.readouterr().out
    assert (
        main(["predict", str(run.root), str(bad), "--out", str(tmp_path / "o")]) == 1
    )  # no calibration, no boxes
    err = capsys.readouterr().err
    assert "has no box calibration" in err and "--boxes" in err  # said at once, not photo by photo
    assert main(["predict", str(tmp_path / "nowhere"), str(bad), "--out", str(tmp_path / "o")]) == 1
    assert "neither a run folder nor a model file" in capsys.readouterr().err
    assert (
        main(["export", str(run.root), "--format", "torchscript", "--out", str(tmp_path / "m.pt")])
        == 0
    )


def test_a_model_without_calibration_predicts_photos_from_given_boxes(trained, photo, tmp_path):
    """lmkit predict --boxes --box-kind crop: crop boxes from a CSV, no face detector; a photo without a row
    is listed."""
    import pandas as pd

    run, _ = trained
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(photo.image).save(photos / "a.png")
    Image.fromarray(photo.image).save(photos / "b.png")
    box = (20.0, 15.0, 260.0, 280.0)
    pd.DataFrame(
        [{"photo": "a.png", "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3]}]
    ).to_csv(tmp_path / "boxes.csv", index=False)
    assert (
        main(
            [
                "predict",
                str(run.root),
                str(photos),
                "--out",
                str(tmp_path / "o"),
                "--boxes",
                str(tmp_path / "boxes.csv"),
                "--box-kind",
                "crop",
            ]
        )
        == 0
    )
    lm = Landmarker.load(run.root, device="cpu")
    (face,) = lm.predict(photo.image, [box], box="crop")
    np.testing.assert_allclose(read_pts(tmp_path / "o" / "a.pts"), face.points, atol=1e-3)
    failures = pd.read_csv(tmp_path / "o" / "failures.csv")
    assert failures["reason"].tolist() == ["no box for it in the --boxes file"]
    pd.DataFrame([{"photo": "a.png", "x0": 5, "y0": 5, "x1": 1, "y1": 9}]).to_csv(
        tmp_path / "bad.csv", index=False
    )
    with pytest.raises(ValueError, match=r"bad.csv: row 2: box .* needs x0 < x1"):
        read_boxes(tmp_path / "bad.csv")


@pytest.mark.skipif(
    not SHARED.is_dir(), reason="../shared/data (real photos) is not beside the checkout"
)
def test_command_on_real_photos_with_dlib(trained, tmp_path):
    """The real detector end to end: faces found on real photos, .pts read back."""
    pytest.importorskip("dlib")
    run, _ = trained
    model_path = with_calibration(run, tmp_path, detector=hog_name(**DETECTORS["hog-coarse"]))
    photos = sorted(SHARED.glob("*.jpg"))[:3]
    assert main(["predict", str(model_path), *map(str, photos), "--out", str(tmp_path / "o")]) == 0
    for p in photos:
        pts = read_pts(tmp_path / "o" / f"{p.stem}.pts")
        assert pts.shape == (194, 2) and np.isfinite(pts).all()


@pytest.mark.skipif(
    not SHARED.is_dir(), reason="../shared/data (real photos) is not beside the checkout"
)
def test_the_detector_is_the_one_the_calibration_was_fitted_for(trained, tmp_path, capsys):
    """model.detector names the detector; the model file's calibration records its name and prediction
    finds it again by it: a model calibrated by an earlier lmkit (plain HOG) keeps the plain HOG."""
    pytest.importorskip("dlib")
    run, _ = trained
    for key, coarse in (("hog", None), ("hog-coarse", 240)):
        lm = Landmarker.load(
            with_calibration(run, tmp_path, detector=hog_name(**DETECTORS[key])), backend="torch"
        )
        assert isinstance(lm.detector, HogDetector) and lm.detector.coarse_side == coarse
    assert HogDetector().name == "dlib HOG frontal face detector"  # what earlier model files record
    unknown = with_calibration(run, tmp_path, detector="some other detector")
    assert (
        main(
            [
                "predict",
                str(unknown),
                str(sorted(SHARED.glob("*.jpg"))[0]),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    said = capsys.readouterr().err
    assert (
        "'some other detector', a face detector this lmkit does not know" in said
        and "--boxes" in said
    )


@pytest.mark.skipif(
    not SHARED.is_dir(), reason="../shared/data (real photos) is not beside the checkout"
)
def test_the_coarse_search_falls_back_to_the_full_search_where_it_finds_no_face():
    """A face too small for the coarse search (under 80 px there) is found by the full search."""
    pytest.importorskip("dlib")
    photo = read_photo_with_face()
    small = np.asarray(Image.fromarray(photo).resize((photo.shape[1] // 3, photo.shape[0] // 3)))
    canvas = np.full((1200, 1200, 3), 90, np.uint8)
    canvas[500 : 500 + small.shape[0], 500 : 500 + small.shape[1]] = small
    full, coarse = HogDetector(), HogDetector(coarse_side=240)
    assert coarse._search(canvas, 240, 0) == []  # not at the coarse size
    assert len(full(canvas)) == 1 and coarse(canvas) == full(canvas)
    assert len(coarse(photo)) == 1  # a large face: the coarse search alone


def read_photo_with_face() -> np.ndarray:
    from lmkit.data.readers import load_image

    return load_image(sorted(SHARED.glob("*.jpg"))[0])


def test_the_onnx_example_takes_a_photo_and_a_box_to_the_points_landmarker_gives(
    trained, photo, tmp_path
):
    """examples/onnx_landmarks.py (onnxruntime, numpy, pillow, the file's metadata only) agrees with
    Landmarker without flip test and re-crops, from a detector's box and from a crop box."""
    import importlib.util

    ort = pytest.importorskip("onnxruntime")
    run, _ = trained
    calibrated = with_calibration(run, tmp_path)
    onnx_file = export(calibrated, "onnx", tmp_path / "model.onnx")
    spec = importlib.util.spec_from_file_location(
        "onnx_landmarks", ROOT / "examples" / "onnx_landmarks.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    lm = Landmarker.load(calibrated, device="cpu", flip_test=False, recrop=0)
    image = Image.fromarray(photo.image)
    detector_box = (40.0, 60.0, 230.0, 250.0)
    for box, kind in (
        (detector_box, "detector"),
        (crop_box(photo.landmarks, photo.image.shape[:2]), "crop"),
    ):
        expected = lm.predict(photo.image, [box], box=kind)[0].points
        got = example.landmarks(session, image, box, kind)
        assert got.shape == (194, 2)
        assert np.abs(got - expected).max() < 0.5, (kind, np.abs(got - expected).max())


def test_a_supplied_box_is_a_face_detectors_box_in_the_cli_the_api_and_the_onnx_example(
    trained, photo, tmp_path, capsys
):
    """One meaning for a box a user supplies, by default: a face detector's box (as face-alignment's
    detected_faces and mmpose's top-down API take them), turned into the model's crop by its box
    calibration. lmkit predict --boxes, Landmarker.predict and examples/onnx_landmarks.py give the
    same points for the same box; --box-kind crop changes them (the box is then the crop itself)."""
    import importlib.util

    import pandas as pd

    ort = pytest.importorskip("onnxruntime")
    run, _ = trained
    calibrated = with_calibration(
        run, tmp_path
    )  # a calibration that moves the box: the kinds differ
    box = (40.0, 60.0, 230.0, 250.0)
    Image.fromarray(photo.image).save(tmp_path / "a.png")
    pd.DataFrame(
        [{"photo": "a.png", "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3]}]
    ).to_csv(tmp_path / "boxes.csv", index=False)
    cli = {}
    for extra in ([], ["--box-kind", "crop"]):
        capsys.readouterr()
        assert (
            main(
                [
                    "predict",
                    str(calibrated),
                    str(tmp_path / "a.png"),
                    "--boxes",
                    str(tmp_path / "boxes.csv"),
                    "--flip-test",
                    "off",
                    "--recrop",
                    "0",
                    "--backend",
                    "torch",
                    *extra,
                ]
            )
            == 0
        )
        rows = pd.read_csv(io.StringIO(capsys.readouterr().out))
        cli[tuple(extra)] = rows[["x", "y"]].to_numpy()
    api = (
        Landmarker.load(calibrated, device="cpu", flip_test=False, recrop=0)
        .predict(photo.image, [box])[0]
        .points
    )
    spec = importlib.util.spec_from_file_location(
        "onnx_landmarks", ROOT / "examples" / "onnx_landmarks.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    session = ort.InferenceSession(
        str(export(calibrated, "onnx", tmp_path / "m.onnx")), providers=["CPUExecutionProvider"]
    )
    onnx = example.landmarks(session, Image.fromarray(photo.image), box)
    assert np.abs(cli[()] - api).max() < 1e-3
    assert np.abs(onnx - api).max() < 0.5  # another runtime and resize: within half a photo pixel
    assert np.abs(cli[("--box-kind", "crop")] - api).max() > 2  # the other kind is another crop


def every_option(run, tmp_path):
    """The run's model file with everything a photo goes through: a box calibration, a centred view,
    a bias correction, the flip test and two re-crops."""
    model, info = load_model_file(with_view(run, tmp_path))
    cal = BoxCalibration(
        "fake detector", (-0.1, -0.3, 1.1, 1.1), 10, 12, (0.0, 0.0, 0.0, 0.0)
    ).to_dict()
    info = dataclasses.replace(info, box_calibration=cal, flip_test=True, recrop=2)
    return save_model_file(model, info, tmp_path / "every_option.pt")


def test_the_onnx_runtime_backend_gives_the_pytorch_points(trained, photo, tmp_path):
    """lmkit predict's network in ONNX Runtime (the model file's cached copy): the same crops, shrunk
    as augment.to_float does, the same view, correction, flip test and re-crops: the same points."""
    pytest.importorskip("onnxruntime")
    run, _ = trained
    path = every_option(run, tmp_path)
    det_box = (40.0, 60.0, 230.0, 250.0)
    by = {
        b: Landmarker.load(path, detector=lambda image: [det_box], backend=b)
        for b in ("torch", "onnx")
    }
    assert "ONNX Runtime" in repr(by["onnx"]) and "PyTorch" in repr(by["torch"])
    assert json.loads(by["onnx"].info.to_json()) == json.loads(
        by["torch"].info.to_json()
    )  # the whole record
    (a,), (b,) = by["torch"].detect(photo.image), by["onnx"].detect(photo.image)
    assert a.crop_box == pytest.approx(b.crop_box, abs=1e-3)
    np.testing.assert_allclose(b.points, a.points, atol=1e-3)
    no_flip = Landmarker.load(
        path, detector=lambda image: [det_box], backend="onnx", flip_test=False
    )
    assert (
        np.abs(no_flip.detect(photo.image)[0].points - b.points).max() > 1e-2
    )  # the flip test did something


def test_the_onnx_copy_is_written_once_per_model_file_and_never_stale(
    trained, photo, tmp_path, onnx_cache
):
    pytest.importorskip("onnxruntime")
    from lmkit.use.inference import onnx_copy

    run, _ = trained
    path = with_calibration(
        run, tmp_path, box=(-0.123, -0.3, 1.1, 1.1)
    )  # a model file no other test wrote
    said = []
    first = onnx_copy(path, log=said.append)
    assert first.parent == onnx_cache and len(said) == 1 and "writing its ONNX copy" in said[0]
    stamp = first.stat().st_mtime_ns
    assert (
        onnx_copy(path, log=said.append) == first
        and first.stat().st_mtime_ns == stamp
        and len(said) == 1
    )
    box = crop_box(photo.landmarks, photo.image.shape[:2])
    before = Landmarker.load(path, backend="onnx").predict(photo.image, [box], box="crop")[0].points
    model, info = load_model_file(path)  # the same path, other weights: another copy, other points
    with torch.no_grad():
        model.backbone.fc.bias.add_(0.05)  # every point moves by 0.05 of the input's half-width
    save_model_file(model, info, path)
    assert onnx_copy(path) != first
    after = Landmarker.load(path, backend="onnx").predict(photo.image, [box], box="crop")[0].points
    expected = (
        Landmarker.load(path, backend="torch").predict(photo.image, [box], box="crop")[0].points
    )
    np.testing.assert_allclose(after, expected, atol=1e-3)
    assert np.abs(after - before).max() > 0.1


def test_a_cache_folder_it_cannot_write_leaves_auto_in_pytorch(trained, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    run, _ = trained
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("LMKIT_CACHE", str(blocked))
    said = []
    lm = Landmarker.load(
        with_calibration(run, tmp_path, box=(-0.2, -0.3, 1.1, 1.1)), log=said.append
    )
    assert lm.network.name == "PyTorch" and "no ONNX copy" in said[-1]
    with pytest.raises(OSError):
        Landmarker.load(run.root, backend="onnx")


def test_backend_choices_are_checked(trained, tmp_path):
    run, _ = trained
    with pytest.raises(ValueError, match="backend must be one of auto, onnx, torch"):
        Landmarker.load(run.root, backend="tensorrt")
    with pytest.raises(ValueError, match="backend onnx runs on the CPU"):
        Landmarker.load(run.root, backend="onnx", device="cuda")
    user_export = export(
        run.root, "onnx", tmp_path / "user.onnx"
    )  # uint8 crops at the input size: not a copy
    with pytest.raises(ValueError, match="takes uint8 crops"):
        Landmarker.load(user_export, backend="onnx")


def test_a_landmarker_says_what_model_it_holds(trained):
    run, _ = trained
    text = repr(Landmarker.load(run.root, device="cpu", backend="torch"))
    assert "PyTorch on cpu" in text
    assert "helen194 scheme, 194 points, 32x32 input, regression head" in text
    assert (
        "recipe: loss mse" in text
        and "flip test off" in text
        and "0 re-crops" in text
        and "box calibration none" in text
    )


def test_predict_without_out_prints_one_photos_points_and_writes_beside_several(
    trained, photo, tmp_path, capsys
):
    import pandas as pd

    run, _ = trained
    calibrated = with_calibration(run, tmp_path, box=(0.0, 0.0, 1.0, 1.0))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(photo.image).save(photos / name)
    boxes = tmp_path / "boxes.csv"
    pd.DataFrame(
        [{"photo": n, "x0": 20.0, "y0": 15.0, "x1": 260.0, "y1": 280.0} for n in ("a.png", "b.png")]
    ).to_csv(boxes, index=False)
    assert main(["predict", str(calibrated), str(photos / "a.png"), "--boxes", str(boxes)]) == 0
    out = capsys.readouterr().out
    assert (
        out.splitlines()[0].startswith("photo,face,point,x,y") and len(out.splitlines()) == 1 + 194
    )
    assert sorted(p.name for p in photos.iterdir()) == [
        "a.png",
        "b.png",
    ]  # one photo: nothing written
    assert main(["predict", str(calibrated), str(photos), "--boxes", str(boxes)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 2 * 194
    assert sorted(p.name for p in photos.iterdir()) == [
        "a.landmarks.png",
        "a.png",
        "a.pts",
        "b.landmarks.png",
        "b.png",
        "b.pts",
    ]


def test_no_face_found_names_the_boxes_option(trained, tmp_path, capsys):
    run, _ = trained
    calibrated = with_calibration(run, tmp_path)
    Image.fromarray(np.zeros((120, 100, 3), np.uint8)).save(tmp_path / "blank.png")
    lm = Landmarker.load(calibrated, device="cpu", detector=lambda image: [])
    result = predict_files(
        lm, [tmp_path / "blank.png"], tmp_path / "o", log=lambda _: None, progress=False
    )
    assert result["processed"] == 0 and "--boxes" in result["failures"][0][1]


@pytest.mark.slow
@pytest.mark.skipif(
    not SHARED.is_dir(), reason="../shared/data (real photos) is not beside the checkout"
)
def test_the_predict_benchmark_times_lmkit_and_dlib_on_the_same_photos(trained, tmp_path):
    """benchmarks/predict.py in one run: lmkit with both backends, dlib's HOG + ERT, each detector
    alone, the faces each found, and lmkit predict on one photo in a fresh process."""
    pytest.importorskip("dlib")
    from benchmarks import predict as bench
    from lmkit.use.peers import peer_unavailable

    run, _ = trained
    model = with_calibration(run, tmp_path, detector=hog_name(**DETECTORS["hog-coarse"]))
    result = bench.main(
        [str(model), "--photos", str(SHARED), "--n", "3", "--json", str(tmp_path / "b.json")]
    )
    rows = {(r["who"], r["network"]): r for r in result["rows"]}
    assert {("lmkit", "ONNX Runtime"), ("lmkit", "PyTorch")} <= set(rows)
    assert [r["detector"].split(":")[0] for r in result["rows"] if r["who"] == "detector"] == list(
        DETECTORS
    )
    for r in result["rows"]:
        assert r["ms_per_photo"] > 0 and 0 <= r["faces_found"] <= 3
    assert (
        rows[("lmkit", "ONNX Runtime")]["faces_found"] == 3
    )  # these photos' faces are large and frontal
    if peer_unavailable(68) is None:
        assert any(r["who"] == "dlib" for r in result["rows"])
    wall = result["one_photo"]
    assert wall["first_use_s"] > 0 and len(wall["runs_s"]) == 3
    assert json.loads((tmp_path / "b.json").read_text())["photos"] == 3
