"""How a run's protocol compares with the study's, aspect by aspect.

The study's numbers (test MSE 27.84, best validation MSE 8.00, px² of the 256x256 input) mean
something beside a run's only as far as the two protocols agree. ``compare`` lists every
aspect that moves the MSE (data, crop, test faces, training photos, weights, input, budget,
recipe, validation, test-time tricks) with the study's value, the run's value and whether
they agree, all generated from the run's params and its caches' manifests; the report shows
that table directly above the two MSEs.
"""

from __future__ import annotations

from pathlib import Path

from lmkit.report.narrative import plural
from lmkit.run.params import Model, Params

STUDY_CROP_PADDING = 5  # photo pixels (crop_face.py)
STUDY_FACE_PIXELS = 500  # about how tall a face is in Helen's original photos
STUDY_AUGMENT = {
    "rotation": 20.0,
    "crop_fraction": 245 / 256,
    "intensity": [0.5, 1.5],
    "flip": 0.0,
    "scale": [1.0, 1.0],
    "shift": 0.0,
    "edges": [0.0, 0.0, 0.0, 0.0],
}
STUDY_RECIPE = {"loss": "mse", "optimizer": "adam", "schedule": "none", "warmup": 0}


def _row(aspect: str, study: str, run: str, same: bool | None) -> dict:
    return {"aspect": aspect, "study": study, "run": run, "same": same}


def _weights(m: Model) -> str:
    if m.pretrained is True:
        return "ImageNet (torchvision)"
    if m.pretrained:
        return f"a saved ResNet18 state dict ({Path(m.pretrained).name})"
    return f"random ({'head at the mean shape' if m.head_init == 'mean_shape' else 'torchvision init'})"


def compare(
    params: Params, train_manifest: dict, test_manifest: dict, n_train: int, n_val: int, n_test: int
) -> list[dict]:
    """One row per aspect: ``aspect``, ``study``, ``run`` (in words) and ``same`` (True, False,
    or None where the study's own value is only approximately known)."""
    d, m, t, s = params.data, params.model, params.train, params.search
    helen194 = train_manifest["source"] == "helen" and train_manifest["n_points"] == 194
    source = {
        "helen": "Helen, official layout",
        "300w": "300-W layout",
        "synthetic": "synthetic faces (lmkit)",
    }
    root = f" ({Path(train_manifest['root']).name})" if train_manifest.get("root") else ""
    photos = n_train + n_val if d.split == "clean" else n_train
    margin = train_manifest.get("margin") or {}
    study_margin = STUDY_CROP_PADDING / STUDY_FACE_PIXELS
    forehead = "1/3" if abs(d.forehead - 1 / 3) < 1e-9 else f"{d.forehead:.3g}"
    if train_manifest["box"] == "study":
        crop = f"landmark box, top raised by {forehead} of its height, {d.padding:g} photo pixels (crop_face.py)"
    elif train_manifest["box"] == "landmarks":
        crop = f"landmark box, top raised by {forehead} of its height, {d.padding:.0%} of its larger side (lmkit)"
    else:
        crop = "placed from the eye and mouth centres (lmkit's eyes-mouth)"
    inventory = test_manifest.get("inventory") or {}
    missing = (
        f"; {inventory['missing']} listed faces have no photo" if inventory.get("missing") else ""
    )
    test_faces = (
        f"{n_test} faces of testnames.txt{root}{missing}"
        if test_manifest["source"] == "helen"
        else f"{n_test} faces of {source[test_manifest['source']]}{root}"
    )
    joint = (
        (
            f"; trained beside {', '.join(Path(f).name for f in d.joint_train)} (another scheme's faces, "
            "outputs of their own)"
        )
        if d.joint_train
        else ""
    )
    aug = {k: getattr(t, k) for k in STUDY_AUGMENT}
    aug_changes = [f"{k} {v}" for k, v in aug.items() if v != STUDY_AUGMENT[k]]
    recipe = {k: getattr(t, k) for k in STUDY_RECIPE}
    test_time = [
        x
        for x, on in (
            ("flip test", params.eval.flip_test),
            ("the mean training crop's view", m.view != "whole"),
            ("bias correction", m.bias_correction),
        )
        if on
    ]
    return [
        _row(
            "data set",
            "Helen, 194 points (Le et al. 2012)",
            f"{source[train_manifest['source']]}{root}, {train_manifest['n_points']} points"
            + joint,
            helen194 and not joint,
        ),
        _row(
            "crop",
            "landmark box, top raised by 1/3 of its height, 5 photo pixels (crop_face.py), resized to 300x300",
            f"{crop}, resized to {d.crop_size}x{d.crop_size}",
            train_manifest["box"] == "study"
            and d.padding == STUDY_CROP_PADDING
            and abs(d.forehead - 1 / 3) < 1e-9
            and d.crop_size == 300,
        ),
        _row(
            "margin beside the face",
            f"5 px, about {study_margin:.0%} of a face about {STUDY_FACE_PIXELS} px tall",
            f"{margin.get('pixels', float('nan')):.1f} px, {margin.get('fraction_of_face', float('nan')):.1%} of a face "
            f"{margin.get('face_pixels', float('nan')):.0f} px tall (median)"
            if margin
            else "not recorded",
            None if not margin else abs(margin["fraction_of_face"] - study_margin) < 0.005,
        ),
        _row(
            "test faces", "Helen's official 330 test faces", test_faces, helen194 and n_test == 330
        ),
        _row(
            "training photos",
            "2,000 (Helen's training split)",
            f"{photos:,}"
            + (
                f" ({n_train} trained on, {n_val} held out for validation)"
                if d.split == "clean"
                else ""
            ),
            photos == 2000,
        ),
        _row("weights at the start", "ImageNet (torchvision)", _weights(m), m.pretrained is True),
        _row(
            "network input",
            "256x256",
            f"{m.input_size}x{m.input_size} (MSE reported in pixels of 256x256)",
            m.input_size == 256,
        ),
        _row("epochs", "100", str(t.epochs), t.epochs == 100),
        _row(
            "samples per epoch",
            "8,000 (4 augmented per photo)",
            f"{n_train * t.epoch_multiplier:,} ({t.epoch_multiplier} per photo)",
            n_train * t.epoch_multiplier == 8000,
        ),
        _row(
            "augmentation",
            "rotation ±20°, random crop 245/256, intensity x0.5-1.5",
            "as the study" if not aug_changes else "as the study, but " + ", ".join(aug_changes),
            not aug_changes,
        ),
        _row(
            "loss, optimiser, schedule",
            "MSE, Adam, constant learning rate",
            f"{recipe['loss']}, {recipe['optimizer']}, {recipe['schedule']}"
            + (f" after {plural(recipe['warmup'], 'warm-up epoch')}" if recipe["warmup"] else ""),
            recipe == STUDY_RECIPE,
        ),
        _row(
            "learning rate and decay",
            "random log-uniform search, 10 epochs per trial",
            f"random log-uniform search, {plural(s.trials, 'trial')} of {plural(s.epochs_per_trial, 'epoch')}"
            if s.enabled
            else "fixed (no search)",
            s.enabled and s.epochs_per_trial == 10,
        ),
        _row(
            "validation faces",
            "augmented copies of training photos",
            "held out before augmentation (clean)"
            if d.split == "clean"
            else "augmented copies of training photos",
            d.split == "paper",
        ),
        _row(
            "at test time",
            "the whole crop, one pass",
            "the whole crop, one pass" if not test_time else "with " + ", ".join(test_time),
            not test_time,
        ),
    ]


def summary(rows: list[dict]) -> str:
    """One line: how many aspects agree with the study, and which differ."""
    differ = [r["aspect"] for r in rows if r["same"] is False]
    agree = sum(r["same"] is True for r in rows)
    return f"{agree} of {len(rows)} aspects as in the study" + (
        f"; differs in: {', '.join(differ)}" if differ else ""
    )
