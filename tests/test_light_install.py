"""pip install lmkit without extras is a landmark detector: Landmarker, lmkit predict and
lmkit export work without importing any of the report's packages (an extra)."""

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORT = [
    "pandas",
    "matplotlib",
    "seaborn",
    "optuna",
    "papermill",
    "nbconvert",
    "nbformat",
    "jupyterlab",
    "ipykernel",
    "ipywidgets",
    "IPython",
]


def test_the_report_packages_are_an_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    assert not any(name.lower() in core for name in REPORT)
    assert {"pandas", "papermill", "nbconvert", "matplotlib", "seaborn", "jupyterlab"} <= {
        d.split(">")[0].split("=")[0].strip() for d in project["optional-dependencies"]["report"]
    }


# a fresh interpreter runs predict and export, then lists what it imported: none of the report's packages
LIGHT_RUN = textwrap.dedent("""
    import sys
    import numpy as np, pathlib
    from PIL import Image
    from lmkit.study.model import build_model, save_model_file
    from lmkit.study.modelinfo import ModelInfo
    from lmkit.use.inference import Landmarker
    from lmkit.cli import main
    out = pathlib.Path(sys.argv[1])
    save_model_file(build_model(194, False), ModelInfo(scheme="helen194", n_points=194, input_size=32, crop_size=300,
                    forehead=1 / 3, padding=0.05, mean_shape=[[150.0, 150.0]] * 194, dataset="x"), out / "m.pt")
    Image.fromarray(np.full((120, 100, 3), 128, np.uint8)).save(out / "p.jpg")
    (out / "boxes.csv").write_text("photo,x0,y0,x1,y1\\np.jpg,10,10,90,110\\n")
    assert main(["predict", str(out / "m.pt"), str(out / "p.jpg"), "--out", str(out / "o"),
                 "--boxes", str(out / "boxes.csv"), "--box-kind", "crop"]) == 0
    assert main(["export", str(out / "m.pt"), "--format", "torchscript", "--out", str(out / "m.ts")]) == 0
    loaded = {blocked!r} & set(m.split(".")[0] for m in sys.modules)
    assert not loaded, f"imported {{sorted(loaded)}}"
    print("light ok")
""")


@pytest.mark.slow  # whole trainings or fresh interpreters: kept out of the edit loop
def test_predict_and_export_import_none_of_the_report_packages(tmp_path):
    code = LIGHT_RUN.format(blocked=set(REPORT))
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "light ok" in done.stdout
    assert (tmp_path / "o" / "p.pts").exists() and (tmp_path / "o" / "points.csv").exists()


# the same photo again in a fresh interpreter, now that the model file's ONNX copy is cached: no PyTorch
NO_TORCH_RUN = textwrap.dedent("""
    import sys, pathlib
    from lmkit.cli import main
    out = pathlib.Path(sys.argv[1])
    assert main(["predict", str(out / "m.pt"), str(out / "p.jpg"), "--out", str(out / "again"),
                 "--boxes", str(out / "boxes.csv"), "--box-kind", "crop"]) == 0
    loaded = {"torch", "torchvision"} & set(m.split(".")[0] for m in sys.modules)
    assert not loaded, f"imported {sorted(loaded)}"
    print("no torch ok")
""")


@pytest.mark.slow  # whole trainings or fresh interpreters: kept out of the edit loop
def test_predict_with_the_onnx_copy_cached_does_not_import_torch(tmp_path):
    for code, said in (
        (LIGHT_RUN.format(blocked=set(REPORT)), "light ok"),
        (NO_TORCH_RUN, "no torch ok"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert said in done.stdout
    first, again = ((tmp_path / d / "p.pts").read_text() for d in ("o", "again"))
    assert first == again  # the copy the first run wrote, read back: the same points
