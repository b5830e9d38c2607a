"""End to end: the whole chain through papermill on a tiny parameter set."""

import json
import re

import numpy as np
import pytest

from lmkit.chain.pipeline import NOTEBOOKS, ChainError, run_chain
from lmkit.run.folder import FIGURES

from tests.conftest import TINY, TINY_CONSOLE as CONSOLE, copy_run

pytestmark = pytest.mark.slow  # whole chains or several processes

OVERRIDES = [f"{k}={v}" for k, v in TINY.items()]


@pytest.fixture
def tiny_run(tiny_chain):
    """The session's tiny chain (tests/conftest.py): read, never changed."""
    return tiny_chain


def test_the_console_shows_each_notebooks_progress_as_it_happens(tiny_run):
    epochs = [line for line in CONSOLE if "] epoch" in line]
    assert len(epochs) == TINY["train.epochs"]
    trials = [line for line in CONSOLE if line.strip().startswith("trial ")]
    assert len(trials) == TINY["search.trials"]
    # in order: the training lines come after "03_train ..." and before "03_train done"
    start, end = (
        CONSOLE.index("03_train ..."),
        next(i for i, x in enumerate(CONSOLE) if x.startswith("03_train done")),
    )
    assert all(start < CONSOLE.index(line) < end for line in epochs)
    assert len(CONSOLE) < 60  # progress, not the notebooks' whole output


def test_progress_is_recorded_as_events_each_of_a_kind_its_stage_declares(tiny_run):
    import pandas as pd

    from lmkit.chain import stages

    for name in NOTEBOOKS:
        events = [
            json.loads(line)
            for line in tiny_run.path("progress", f"{name}.jsonl").read_text().splitlines()
        ]
        assert {e["kind"] for e in events} <= set(stages.stage(name).progress), name
    epochs = [
        json.loads(line)
        for line in tiny_run.path("progress", "03_train.jsonl").read_text().splitlines()
    ]
    epochs = [e for e in epochs if e["kind"] == "epoch"]
    history = pd.read_csv(tiny_run.history)
    assert [e["epoch"] for e in epochs] == history["epoch"].tolist()
    assert np.allclose([e["val_mse"] for e in epochs], history["val_mse"])


def test_the_index_page_shows_params_links_caveats_and_how_to_reproduce(tiny_run):
    import re

    index = tiny_run.index.read_text()
    for href in ("params.yaml", "train/history.csv", "eval/metrics.json", "train/model.pt"):
        assert f"href='{href}'" in index
    for name in NOTEBOOKS:
        assert f"href='notebooks/{name}.html'" in index
    assert "Reproduce this run" in index and f"lmkit run {tiny_run.root / 'params.yaml'}" in index
    assert (
        "About dlib's rows" not in index and "dlib peer:" in index
    )  # no dlib rows on synthetic faces: no caveat
    assert (
        "For reference only, not comparable" in index
    )  # the study's number outside the results table
    assert "<details>" in index  # the params collapsed
    assert "seed: 0" in index  # the params themselves
    assert (
        "The network saw the whole crop (as the study), cut around the landmark box; no bias correction."
        in index
    )
    assert not re.search(r"\b1 (epochs|trials)\b", index)
    page = (tiny_run.root / "notebooks" / "03_train.html").read_text()
    assert "href='../index.html'" in page and "href='04_evaluate.html'" in page


def test_on_helen194_the_protocol_table_stands_directly_above_the_two_mses(tiny_run):
    """The comparison with the study, generated from the run's params and manifests: every
    aspect with the study's value and the run's, then the study's MSEs beside the run's."""
    from lmkit.run import params as P
    from lmkit.report.protocol import compare
    from lmkit.report.page import study_html

    m = json.loads(tiny_run.metrics.read_text())
    params = P.load(
        None,
        {
            "data.source": "helen",
            "data.root": "/x/helen194",
            "data.box": "study",
            "data.padding": 5,
        },
    )
    manifest = {
        "source": "helen",
        "n_points": 194,
        "box": "study",
        "root": "/x/helen194",
        "margin": {"pixels": 5.0, "fraction_of_face": 0.021, "face_pixels": 240.0},
    }
    rows = compare(
        params,
        manifest,
        {**manifest, "inventory": {"listed": 330, "used": 330, "missing": 0}},
        1600,
        400,
        330,
    )
    same = {r["aspect"]: r["same"] for r in rows}
    assert same["data set"] and same["crop"] and same["test faces"] and same["training photos"]
    assert same["margin beside the face"] is False and same["weights at the start"] is False
    html = study_html({**m, "comparable_to_paper": True, "protocol": rows})
    assert (
        html.index("Protocol: the study's and this run's")
        < html.index("27.84")
        < html.index("8.00")
    )
    assert "2.1% of a face 240 px tall" in html
    assert "not comparable" in study_html(m)


def test_a_model_worse_than_the_mean_shape_is_flagged(tiny_run, tmp_path):
    import shutil

    from lmkit.report.page import write_index
    from lmkit.run.folder import RunFolder

    copy = RunFolder(tmp_path / "copy")
    shutil.copytree(tiny_run.root, copy.root, ignore=shutil.ignore_patterns("*.npy", "*.pt"))
    m = json.loads(copy.metrics.read_text())
    base = m["methods"]["mean shape (baseline)"]["nme_io_mean"]
    m["methods"]["ResNet18 (this run)"]["nme_io_mean"] = base * 1.5
    copy.metrics.write_text(json.dumps(m))
    write_index(copy)
    assert "no better than the mean shape" in copy.index.read_text()
    m["methods"]["ResNet18 (this run)"]["nme_io_mean"] = base * 0.5
    copy.metrics.write_text(json.dumps(m))
    write_index(copy)
    assert "no better than the mean shape" not in copy.index.read_text()


def test_the_report_opens_in_a_real_browser(tiny_run):
    """Headless Chromium loads index.html: every image loads, every link points at a file."""
    import re
    import shutil
    import subprocess

    browser = (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    probe = tiny_run.root / ".probe.html"
    script = (
        "<script>window.addEventListener('load', () => { const bad = [...document.images]"
        ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));"
        "document.body.setAttribute('data-probe', JSON.stringify({images: document.images.length, broken: bad}));"
        "});</script>"
    )
    probe.write_text(tiny_run.index.read_text().replace("</body>", script + "</body>"))
    profile = tiny_run.root / ".chromium-profile"
    out = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--allow-file-access-from-files",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    probe.unlink()
    shutil.rmtree(profile, ignore_errors=True)
    found = re.search(r'data-probe="([^"]*)"', out.stdout)
    assert found, f"Chromium printed no result: {out.stderr[-2000:]}"
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result["images"] >= 7 and result["broken"] == []
    for href in re.findall(r"href='([^']+)'", tiny_run.index.read_text()):
        assert (tiny_run.root / href).is_file(), f"broken link {href}"


def test_whole_chain_writes_every_figure_metrics_and_html(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "tiny")  # run again below: a copy of the shared chain
    expected = [
        k for k in FIGURES if k not in ("ced_oc", "ablation_ced", "photos")
    ]  # 68 points; ablate; real photos
    for key in expected:
        assert run.figure(key).stat().st_size > 5000, key
    metrics = json.loads(run.metrics.read_text())
    assert metrics["n_test"] == 12 and metrics["comparable_to_paper"] is False
    assert set(metrics["methods"]) == {"ResNet18 (this run)", "mean shape (baseline)"}
    validation = metrics[
        "validation"
    ]  # the model on the validation faces, scored as the test faces
    assert validation["faces"] == metrics["n_val"] and set(validation["methods"]) == {
        "ResNet18 (this run)"
    }
    assert np.isfinite(validation["methods"]["ResNet18 (this run)"]["nme_io_mean"])
    for name in NOTEBOOKS:
        assert (run.root / "notebooks" / f"{name}.html").exists()
    index = run.index.read_text()
    assert (
        "Not comparable to the study" in index
        and "27.84" in index
        and "Validation split of" in index
    )
    for key in expected:
        assert f"figures/{key}.png" in index
    assert "predictor has 68 points" in index  # the peer's absence is said
    info = json.loads((run.root / "run.json").read_text())
    assert info["timings_s"].keys() == set(NOTEBOOKS) and info["git_commit"] and info["seed"] == 0
    assert "torch" in info["packages"] and info["device"]

    # the same params again: every notebook is reused; a changed evaluation param re-runs 04 and 05 only
    executed = {name: run.path("notebooks", f"{name}.ipynb") for name in NOTEBOOKS}
    written = {name: f.stat().st_mtime_ns for name, f in executed.items()}
    run_chain("params/quick.yaml", OVERRIDES, str(run.root), log=lambda _: None)
    assert {name: f.stat().st_mtime_ns for name, f in executed.items()} == written
    run_chain(
        "params/quick.yaml", OVERRIDES + ["eval.ced_max=0.5"], str(run.root), log=lambda _: None
    )
    again = [name for name, f in executed.items() if f.stat().st_mtime_ns != written[name]]
    assert again == ["04_evaluate", "05_figures"]
    assert json.loads((run.root / "run.json").read_text())["stages"].keys() == set(NOTEBOOKS)


def test_a_failing_notebook_stops_the_chain_naming_notebook_and_cell(tmp_path):
    (
        tmp_path / "trainset"
    ).mkdir()  # the layout is right (preflight passes) but holds no annotation
    (tmp_path / "testset").mkdir()
    with pytest.raises(
        ChainError,
        match=r"notebook 01_prepare failed in cell \[\d+\]: ValueError: .*trainset: no \.pts",
    ):
        run_chain(
            "params/quick.yaml",
            ["data.source=300w", f"data.root={tmp_path}"],
            str(tmp_path / "bad"),
            log=lambda _: None,
        )
    assert not (tmp_path / "bad" / "notebooks" / "02_hpsearch.ipynb").exists()


def test_after_a_notebook_ran_outside_lmkit_run_lmkit_report_rebuilds_figures_and_pages(
    tiny_run, tmp_path
):
    """The README's papermill example, then lmkit report: the figures and index.html come from
    what the folder holds now, and the page names the stage changed outside lmkit run."""
    from pathlib import Path

    import papermill as pm

    from lmkit.cli import main

    root = Path(__file__).resolve().parents[1]
    run = copy_run(tiny_run, tmp_path / "tiny")
    figure = next(run.figure(k) for k in FIGURES if run.figure(k).exists())
    before = figure.stat().st_mtime_ns
    pm.execute_notebook(
        str(root / "notebooks" / "04_evaluate.ipynb"),
        str(tmp_path / "out.ipynb"),
        kernel_name="python3",
        parameters={"run_dir": str(run.root), "params_file": str(run.params), "flip_test": True},
        cwd=str(root),
        progress_bar=False,
    )
    assert json.loads(run.metrics.read_text())["flip_test"] is True
    assert main(["report", str(run.root)]) == 0
    assert figure.stat().st_mtime_ns != before
    index = run.index.read_text()
    assert "Changed outside <code>lmkit run</code>" in index and "04_evaluate" in index
    assert main(["report", str(tmp_path / "nowhere")]) == 1


def test_a_synthetic_runs_pages_name_its_frame_and_leave_the_study_out(tiny_run):
    """On synthetic faces the NME is in pixels of the generated image (there is no photo), the
    report's Data and budget has no study number beside a not-comparable run, and 04's reading
    names the normalisation of the NME it quotes."""
    metrics = json.loads(tiny_run.metrics.read_text())
    assert (
        metrics["nme_frame"] == "pixels of the generated synthetic image"
        and not metrics["comparable_to_paper"]
    )
    index = tiny_run.index.read_text()
    budget = index[index.index("<h2>Data and budget</h2>") : index.index("<h2>Test metrics</h2>")]
    assert "8.00" not in budget and "study:" not in budget
    reading = tiny_run.path("notebooks", "04_evaluate.html").read_text()
    assert re.search(r"NME 0\.\d{3} (oc|io)\)", reading)
