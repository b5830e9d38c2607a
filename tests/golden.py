"""A tiny, fixed training run whose losses are recorded in tests/data/golden_losses.json.

Regenerate only on purpose (a change meant to alter training numerics):
    python -m tests.golden --write
"""
import json
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "data" / "golden_losses.json"
CHANGES = {"data.synthetic_train": 24, "data.synthetic_test": 4, "model.input_size": 32,
           "model.head_init": "mean_shape", "train.epochs": 2, "train.batch_size": 8, "train.epoch_multiplier": 2,
           "train.lr": 1e-3, "train.weight_decay": 1e-4}


def golden_run(tmp: Path) -> dict:
    from lmkit import metrics as M
    from lmkit import params as P
    from lmkit.prepare import prepare, split_train_val
    from lmkit.schemes import HELEN194
    from lmkit.train import TrainConfig, fit, new_model

    p = P.load(None, CHANGES)
    tr = prepare(p["data"], 0, tmp, lambda _: None)["train"]
    s = split_train_val(len(tr), 0.25, 0)
    train = (tr.images[s["train"]], tr.landmarks[s["train"]])
    val = (tr.images[s["val"]], tr.landmarks[s["val"]])
    model = new_model(194, p, M.mean_shape(train[1]), 0, "cpu")
    hist = fit(model, *train, *val, TrainConfig.from_params(p, "cpu", HELEN194.mirror), log=lambda _: None)
    return {"train_mse": hist["train_mse"].tolist(), "val_mse": hist["val_mse"].tolist()}


if __name__ == "__main__":
    import tempfile

    result = golden_run(Path(tempfile.mkdtemp()))
    print(result)
    if "--write" in sys.argv:
        GOLDEN.write_text(json.dumps(result, indent=2) + "\n")
