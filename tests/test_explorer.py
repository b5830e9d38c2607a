"""The explorer reads a run folder and shows any test face, ranked and filtered as the figures are."""

import numpy as np
import pytest

from lmkit.run import params as P
from lmkit.study import metrics
from lmkit.report.explorer import (
    RunFaces,
    compare_figure,
    explore,
    face_figure,
    group_indices,
    static_summary,
)
from lmkit.data.prepare import load_sources, write_cache
from lmkit.run.folder import RunFolder
from lmkit.study.schemes import HELEN194
from lmkit.data.synthetic import synthetic_entries


def fake_run(root, shift_jaw_of=2, seed=0):
    """A run folder with a test cache of 6 synthetic faces and predictions: the truth plus noise,
    one face's jaw pushed far off."""
    run = RunFolder(root)
    params = P.load(None, {"data.synthetic_test": 6})
    P.dump(params, run.params)
    test = write_cache(
        synthetic_entries(6, "test", 0), run.cache_dir() / "test", {"source": "synthetic"}
    )
    true = np.asarray(test.landmarks, dtype=np.float64)
    pred = true + np.random.default_rng(seed).normal(0, 1.5, true.shape)
    pred[shift_jaw_of, HELEN194.group("jaw").indices] += 25
    _, boxes = load_sources(run.cache_dir() / "test")
    per, _ = metrics.summarize(
        pred,
        true,
        HELEN194,
        256 / 300,
        photo=(metrics.to_photo(pred, boxes, 300), metrics.to_photo(true, boxes, 300)),
    )
    run.predictions.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        run.predictions,
        true=true,
        names=np.array(test.names),
        model__pred=pred,
        **{f"model__{k}": v for k, v in per.items()},
    )
    return run, per


def test_faces_are_ranked_as_fig5_and_grouped_by_part(tmp_path):
    run, per = fake_run(tmp_path / "run")
    faces = RunFaces.load(run.root)
    _, worst = metrics.best_and_worst(per["mse"])
    assert faces.index(1) == worst[0] and faces.index(2) == worst[1]  # rank 1 is Fig. 5's worst
    assert faces.nme_label == "outer eye corners"
    np.testing.assert_allclose(faces.table["nme"], per["nme_oc"])
    assert (
        faces.sorted_by("nme_jaw").iloc[0]["face"] == faces.names[2]
    )  # the pushed jaw is the worst jaw
    assert set(group_indices(HELEN194)) == {"jaw", "nose", "mouth", "eyes", "brows"}
    jaw_worst = faces.filtered("nme_jaw", faces.table["nme_jaw"].iloc[2])
    assert list(jaw_worst["face"]) == [faces.names[2]]
    with pytest.raises(KeyError, match="no test face named 'nobody'"):
        faces.index("nobody")
    with pytest.raises(IndexError, match="ranks 1 to 6"):
        faces.index(7)


def test_point_errors_colour_the_face_and_saliency_comes_on_demand(tmp_path):
    from lmkit.study.model import build_model, save_model_file
    from lmkit.study.modelinfo import ModelInfo

    run, _ = fake_run(tmp_path / "run")
    faces = RunFaces.load(run.root)
    err = faces.point_errors(2)
    assert err[HELEN194.group("jaw").indices].min() > 25 * 256 / 300 * 0.9
    fig = face_figure(faces, 2)
    assert "MSE" in fig.axes[0].get_title() and len(fig.axes) == 2  # the face and its colour bar
    model = build_model(194, False)
    save_model_file(
        model,
        ModelInfo(
            scheme="helen194",
            n_points=194,
            input_size=32,
            crop_size=300,
            forehead=1 / 3,
            padding=0.05,
            mean_shape=faces.true.mean(0).tolist(),
            dataset="x",
        ),
        run.model_file,
    )
    seen, sal = faces.saliency(0)
    assert seen.shape == (32, 32, 3) and sal.shape == (32, 32) and sal.max() > 0
    assert len(face_figure(faces, 0, saliency=True).axes) == 4


def test_two_runs_are_compared_on_the_same_face_and_the_html_page_gets_a_summary(tmp_path):
    a, _ = fake_run(tmp_path / "a")
    b, _ = fake_run(tmp_path / "b", shift_jaw_of=4, seed=1)
    fa, fb = RunFaces.load(a.root), RunFaces.load(b.root)
    fig = compare_figure(fa, fb, fa.names[2])
    assert len(fig.axes) == 3 and [ax.get_title().split(":")[0] for ax in fig.axes[:2]] == [
        "a",
        "b",
    ]  # one figure, one bar
    html = static_summary(fa, n=3)
    assert "needs a live Python kernel" in html and html.index(fa.names[2]) > 0
    assert html.count("<tr>") == 4  # a header and the three worst
    box = explore(a.root, b.root)  # the widgets build without a front end
    assert box.children


def test_predictions_of_another_cache_are_refused(tmp_path):
    run, _ = fake_run(tmp_path / "run")
    p = dict(np.load(run.predictions))
    p["names"] = p["names"][::-1]
    np.savez(run.predictions, **p)
    with pytest.raises(ValueError, match="its faces are not those of the test cache"):
        RunFaces.load(run.root)


def test_two_runs_on_one_face_share_one_error_scale(tmp_path):
    a, _ = fake_run(tmp_path / "a")  # face 2's jaw is 25 px off in run a, not in run b
    b, _ = fake_run(tmp_path / "b", shift_jaw_of=4, seed=1)
    fa, fb = RunFaces.load(a.root), RunFaces.load(b.root)
    fig = compare_figure(fa, fb, fa.names[2])
    scales = [ax.collections[-1].norm.vmax for ax in fig.axes[:2]]
    assert scales[0] == scales[1] == pytest.approx(float(fa.point_errors(2).max()))
    assert scales[0] > 2 * float(fb.point_errors(fb.index(fa.names[2])).max())
    assert face_figure(fa, 0, error_max=40.0).axes[0].collections[-1].norm.vmax == 40.0


def _with_model(run, faces):
    from lmkit.study.model import build_model, save_model_file
    from lmkit.study.modelinfo import ModelInfo

    save_model_file(
        build_model(194, False),
        ModelInfo(
            scheme="helen194",
            n_points=194,
            input_size=32,
            crop_size=300,
            forehead=1 / 3,
            padding=0.05,
            mean_shape=faces.true.mean(0).tolist(),
            dataset="x",
        ),
        run.model_file,
    )


def test_the_explorer_driven_through_its_widgets(tmp_path):
    """It opens on the worst face; the face stays selected across sorting and filtering while it is
    listed; the rank box follows a face picked from the list; previous / next step through the
    list; a rank outside the filter clears the filter and says so; the other run is picked from
    the run folders beside it, and compare mode honours saliency."""
    a, per = fake_run(tmp_path / "a")
    fake_run(tmp_path / "b", shift_jaw_of=4, seed=1)
    faces = RunFaces.load(a.root)
    _with_model(a, faces)
    _with_model(RunFolder(tmp_path / "b"), faces)
    box = explore(a.root)
    c, shown = box.controls, box.figures
    worst = faces.names[faces.index(1)]
    assert c["face"].value == worst and c["rank"].value == 1 and shown and len(shown[-1].axes) == 2
    assert worst in c["groups"].value and "jaw" in c["groups"].value  # its errors by point group
    c[
        "sort"
    ].value = "nme_jaw"  # the jaw-pushed face 2 is the worst jaw: still listed, still selected
    assert c["face"].value == worst
    second = [v for _, v in c["face"].options][1]
    c["face"].value = second
    assert c["rank"].value == faces.table.iloc[faces.index(second)]["rank"]  # the rank follows
    c["next"].click()
    assert c["face"].value == [v for _, v in c["face"].options][2]
    c["previous"].click()
    assert c["face"].value == second
    c["minimum"].value = float(faces.table["nme_jaw"].max())  # only the worst jaw is left
    assert [v for _, v in c["face"].options] == [faces.names[2]] and c["face"].value == faces.names[
        2
    ]
    hidden = next(r for r in range(1, 7) if faces.names[faces.index(r)] != faces.names[2])
    c["rank"].value = hidden
    assert c["minimum"].value == 0.0 and "the filter was cleared" in c["note"].value
    assert c["face"].value == faces.names[faces.index(hidden)]
    assert list(c["compare"].options) == ["(none)", "b"]  # the run folder beside it
    c["compare"].value = "b"
    assert len(shown[-1].axes) == 3  # both runs, one colour bar
    c["saliency"].value = True
    assert len(shown[-1].axes) == 3 + 2 + 2  # and each run's saliency with its bar
    (picture,) = c[
        "output"
    ].children  # what the browser shows: the last figure as a PNG image widget
    assert picture.format == "png" and picture.value[:8] == b"\x89PNG\r\n\x1a\n"
    c["photo"].value = True  # synthetic faces: no original photo (None), which the output says
    assert shown[-1] is None and len(shown) == 2
    assert "original photo is not on this machine" in c["output"].children[1].value
    assert (
        "6 of 6 faces with nme_jaw" in c["listing"].value and worst in c["listing"].value
    )  # the list, a table


def test_points_are_edged_and_the_legend_names_both_kinds(tmp_path):
    run, _ = fake_run(tmp_path / "run")
    ax = face_figure(RunFaces.load(run.root), 0).axes[0]
    dots = ax.collections[-1]
    assert (
        dots.get_cmap().name == "cool" and dots.get_linewidths()[0] > 0
    )  # bright points, dark edges
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["truth", "prediction (colour: its error)"]
