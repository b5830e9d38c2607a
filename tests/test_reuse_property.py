"""Reuse equals a fresh run: after a finished run, a changed params key re-runs what
it must, and the run folder then holds what a fresh run with those params writes. One key per
stage, and keys that more than one stage reads."""

import json

import numpy as np
import pytest

from lmkit.chain.pipeline import run_chain
from lmkit.run.folder import RunFolder

from tests.conftest import SMALL as TINY

CHAIN = ("01_prepare", "02_hpsearch", "03_train", "04_evaluate")
pytestmark = pytest.mark.slow  # whole chains


def _result(folder):
    run = RunFolder(folder)
    m = json.loads(run.metrics.read_text())
    pred = np.load(run.predictions)
    return {
        "methods": m["methods"],
        "n_val": m["n_val"],
        "best_val_mse": m["best_val_mse"],
        "flip_test": m["flip_test"],
        "bias_correction": m["bias_correction"],
        "pred": pred["model__pred"],
    }


def _same(a, b):
    assert (
        a["n_val"] == b["n_val"]
        and a["flip_test"] == b["flip_test"]
        and a["bias_correction"] == b["bias_correction"]
    )
    np.testing.assert_allclose(a["best_val_mse"], b["best_val_mse"], rtol=1e-4)
    np.testing.assert_allclose(a["pred"], b["pred"], atol=1e-3)
    assert a["methods"].keys() == b["methods"].keys()
    for method, row in a["methods"].items():
        assert row.keys() == b["methods"][method].keys(), method
        for k, v in row.items():
            if not k.startswith("seconds"):
                np.testing.assert_allclose(
                    v, b["methods"][method][k], rtol=1e-3, atol=1e-6, err_msg=f"{method} {k}"
                )


@pytest.fixture
def finished(small_chain):
    """The session's finished SMALL chain (tests/conftest.py); each test changes a copy."""
    return small_chain.root


@pytest.mark.parametrize(
    "change",
    [
        "data.val_fraction=0.34",  # 01: the split, and everything after it
        "train.flip=0.5",  # 02, 03: the recipe
        "model.bias_correction=true",  # 02's search key, 03's packaging only: the same weights, a new model file
        "eval.flip_test=true",  # 03 (the model file records it) and 04
    ],
)
def test_a_changed_key_gives_what_a_fresh_run_gives(finished, tmp_path, change):
    import shutil

    again = tmp_path / "again"
    shutil.copytree(finished, again)
    run_chain("params/quick.yaml", TINY + [change], str(again), log=lambda _: None, notebooks=CHAIN)
    fresh = tmp_path / "fresh"
    run_chain("params/quick.yaml", TINY + [change], str(fresh), log=lambda _: None, notebooks=CHAIN)
    _same(_result(again), _result(fresh))

    def scores(result):  # every number but the timings
        return {
            m: {k: v for k, v in row.items() if not k.startswith("seconds")}
            for m, row in result["methods"].items()
        }

    assert scores(_result(again)) != scores(_result(finished))  # the change did change the result
