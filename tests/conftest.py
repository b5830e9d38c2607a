import numpy as np
import pytest
from PIL import Image


def write_image(path, h=120, w=100, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path)
    return arr


def random_landmarks(k, h=120, w=100, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(20, w - 20, k), rng.uniform(30, h - 20, k)], 1).astype(np.float32)


def write_300w_faces(root, n, seed, k=68):
    """``n`` random photos with ``k`` random points each, in the 300-W layout (NAME.jpg beside NAME.pts)."""
    from lmkit.data.readers import write_pts

    for i in range(n):
        write_image(root / f"f{seed}_{i}.jpg", seed=seed + i)
        write_pts(random_landmarks(k, seed=seed + i), root / f"f{seed}_{i}.pts")
    return root


# a very small synthetic run (seconds on a CPU)
TINY = {
    "data.synthetic_train": 40,
    "data.synthetic_test": 12,
    "model.input_size": 32,
    "model.head_init": "mean_shape",
    "train.epochs": 2,
    "train.batch_size": 16,
    "train.epoch_multiplier": 1,
    "search.trials": 2,
    "search.epochs_per_trial": 1,
}


@pytest.fixture
def tiny_params():
    from lmkit.run import params as P

    return P.load(None, TINY)


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory):
    """lmkit predict's ONNX copies of model files go to a temporary folder, never the user's cache
    (subprocesses inherit the variable)."""
    import shutil

    folder = tmp_path_factory.mktemp("lmkit-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMKIT_CACHE", str(folder))
        yield folder
    shutil.rmtree(folder, ignore_errors=True)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: runs whole chains or several trainings (make test-fast leaves it out)"
    )


# a smaller run without the search or the face detector (one epoch), for the tests of reuse
SMALL = [
    "data.synthetic_train=36",
    "data.synthetic_test=8",
    "model.input_size=32",
    "train.batch_size=12",
    "train.epochs=1",
    "train.epoch_multiplier=1",
    "search.enabled=false",
    "eval.detector_box=false",
]
SMALL_CHAIN = ("01_prepare", "02_hpsearch", "03_train", "04_evaluate", "05_figures")


@pytest.fixture(scope="session")
def small_chain(tmp_path_factory):
    """One finished chain of SMALL, run once per session and shared: the tests of reuse copy it
    and change the copy."""
    import shutil
    from pathlib import Path

    from lmkit.chain.pipeline import run_chain

    folder = tmp_path_factory.mktemp("shared-small") / "run"
    run = run_chain(
        str(Path(__file__).resolve().parents[1] / "params" / "quick.yaml"),
        SMALL,
        str(folder),
        log=lambda _: None,
        notebooks=SMALL_CHAIN,
    )
    yield run
    shutil.rmtree(folder.parent, ignore_errors=True)


# what the shared tiny chain printed, for the tests of its console
TINY_CONSOLE: list[str] = []


@pytest.fixture(scope="session")
def tiny_chain(tmp_path_factory):
    """One finished chain of the tiny synthetic params (every notebook through papermill), run once
    per session and shared by the tests that only read it; a test that changes a run copies it
    first (``copy_run``)."""
    import shutil

    from lmkit.chain.pipeline import run_chain

    folder = tmp_path_factory.mktemp("shared") / "tiny"
    run = run_chain(
        "params/quick.yaml",
        [f"{k}={v}" for k, v in TINY.items()],
        str(folder),
        log=TINY_CONSOLE.append,
    )
    yield run
    shutil.rmtree(folder.parent, ignore_errors=True)


def copy_run(run, dest):
    """A copy of a finished run folder that a test may change (params.yaml's paths follow)."""
    import shutil

    from lmkit.run.folder import RunFolder

    shutil.copytree(run.root, dest)
    params = dest / "params.yaml"
    params.write_text(params.read_text().replace(str(run.root), str(dest)))
    return RunFolder(dest)
