"""The closing paragraph of each notebook: a few sentences that read the step's numbers for
the student (where validation stops improving, which faces fail and why). Each function takes
what the step returned and gives Markdown; the notebooks display it."""

from __future__ import annotations

import numpy as np
import pandas as pd


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def prepared(manifest: dict, split: dict, n_test: int) -> str:
    """What 01 prepared, in words: the faces, the split and what was skipped.

    Used in: 01_prepare, "Which number is which point"."""
    n_train, n_val = len(split["train"]), len(split["val"])
    shared = len(set(split["train"]) & set(split["val"]))
    skipped = manifest.get("skipped", [])
    text = (
        f"**What we have.** {plural(n_train, 'training face')} and {plural(n_val, 'validation face')} "
        f"from the training photos, {plural(n_test, 'test face')}; each a {manifest['crop_size']}x"
        f"{manifest['crop_size']} crop. "
    )
    if shared:
        text += (
            f"The validation faces are augmented copies of {plural(shared, 'training face')} (the study's "
            "protocol, `data.split: paper`): expect a validation loss far below the test loss. "
        )
    else:
        text += "No validation face is ever trained on (`data.split: clean`), so validation predicts the test. "
    if skipped:
        text += (
            f"{plural(len(skipped), 'file was', 'files were')} left out; the manifest says why. "
        )
    return text


def searched(trials: pd.DataFrame | None, best: dict) -> str:
    """What 02's search found, in words (or that there was none).

    Used in: 02_hpsearch, "The objective"."""
    if trials is None:
        return f"**No search.** Training uses the params' learning rate {best['lr']:.2e} and weight decay {best['weight_decay']:.2e}."
    done = trials[trials["state"] == "COMPLETE"].sort_values("val_mse")
    spread = done["val_mse"].max() / max(done["val_mse"].min(), 1e-12)
    text = (
        f"**What the search found.** {plural(len(done), 'trial')} completed; the best, trial {best['trial']}, has "
        f"learning rate {best['lr']:.2e} and weight decay {best['weight_decay']:.2e} (validation MSE "
        f"{best['val_mse']:.1f} px²). The worst trial's validation MSE is {spread:.1f} times the best's"
    )
    if len(done) >= 3:
        k = -(-len(done) // 3)  # the best third, rounded up
        top = done.head(k)["lr"]
        text += (
            f"; the best {plural(k, 'trial')} of {len(done)} used learning rate{'s from' if k > 1 else ''} "
            f"{top.min():.1e}{f' to {top.max():.1e}' if k > 1 else ''}"
        )
    text += (
        ". With so few epochs per trial the ranking is noisy: a close second may be as good over the full "
        "training."
    )
    return text


def trained(history: pd.DataFrame) -> str:
    """What 03's training did, in words: the best epoch, its validation MSE, the last epoch's.

    Used in: 03_train, "Training"."""
    h = history.reset_index(drop=True)
    best = int(h["val_mse"].idxmin())
    n, best_epoch = len(h), int(h.loc[best, "epoch"])
    last, first = h.iloc[-1], h.iloc[0]
    text = (
        f"**Reading the curves.** Over {plural(n, 'epoch')} the training MSE fell from {first['train_mse']:.0f} to "
        f"{last['train_mse']:.1f} px² and the validation MSE from {first['val_mse']:.0f} to {last['val_mse']:.1f}. "
        f"Validation was best at epoch {best_epoch} ({h.loc[best, 'val_mse']:.1f} px²); that model is kept. "
    )
    tail = h["val_mse"].iloc[max(0, n - max(3, n // 5)) :]
    if best_epoch < n - max(2, n // 5):
        scheduled = "lr" in h and h["lr"].nunique() > 1  # the rate already changed over the epochs
        text += (
            f"It stopped improving {plural(n - best_epoch, 'epoch')} before the end: more epochs would not help "
            + (
                "even as the learning rate fell (its schedule); more data, augmentation or weight decay might. "
                if scheduled
                else "at this learning rate; a schedule or a lower rate might. "
            )
        )
    elif n > 2 and tail.iloc[-1] < tail.iloc[0]:
        text += "It was still improving at the end: more epochs would likely help. "
    gap = last["val_mse"] / max(last["train_mse"], 1e-12)
    if gap > 1.5:
        text += (
            f"Validation is {gap:.1f} times the training MSE: the model fits the training faces better than new "
            "ones (more data or augmentation would help). "
        )
    elif gap < 0.8:
        text += (
            "Validation is below the training MSE: training is measured on augmented faces, which are harder "
            "than the plain validation crops. "
        )
    return text


def evaluated(
    metrics: dict,
    mse: np.ndarray,
    nme: np.ndarray,
    names: list[str],
    threshold: float = 0.10,
    synthetic: bool = False,
    norm: str = "io",
) -> str:
    """The closing paragraph of 04: from the same arrays and the same ranking as the figures
    (the worst faces are Fig. 5's, ranked by MSE, the study's metric), with no cause named
    that the data cannot have (no hands or hair on synthetic faces). ``nme`` is each face's NME
    over the normalisation ``norm`` (``io`` eye centres, ``oc`` outer eye corners), named with it.

    Used in: 04_evaluate, "Beside the study"."""
    model = metrics["methods"]["ResNet18 (this run)"]
    base = metrics["methods"].get("mean shape (baseline)", {})
    key = "nme_oc_mean" if "nme_oc_mean" in model else "nme_io_mean"
    unit = "outer eye corners" if key == "nme_oc_mean" else "eye centres"
    text = (
        f"**Reading the results.** On {plural(metrics['n_test'], 'test face')} ({metrics['dataset']}) the mean NME "
        f"is {model[key]:.4f} of the distance between the {unit}, and the test MSE {model['mse_mean']:.1f} px² "
        "(256x256 frame). "
    )
    if base:
        ratio = model[key] / base[key]
        text += (
            f"The mean shape, which ignores the image, gets {base[key]:.4f}: the model's error is "
            f"{ratio:.0%} of it. "
            if ratio < 1
            else f"**The model is no better than the mean shape ({base[key]:.4f})**: it has not learned from the "
            "images; train longer or check the learning rate. "
        )
    order = np.argsort(mse, kind="stable")[::-1]  # as M.best_and_worst ranks Fig. 5
    fails = int((nme > threshold).sum())
    causes = (
        "strong head turns, an unusual expression or lighting, or a face drawn much smaller or larger than "
        "the crop expects"
        if synthetic
        else "strong head turns, occlusion (hands, hair, glasses) or faces much smaller or larger than the crop expects"
    )
    over = {"io": "eye centres", "oc": "outer eye corners"}[norm]
    text += (
        f"{plural(fails, 'face')} exceed{'s' if fails == 1 else ''} NME {threshold:.2f} ({over}), the usual "
        f"failure threshold. The worst by MSE, as in Fig. 5 of notebook 05, are "
        f"{', '.join(f'`{names[i]}` ({mse[i]:.1f} px², NME {nme[i]:.3f} {norm})' for i in order[:3])}; large errors "
        f"usually come from {causes}. "
    )
    if metrics.get("comparable_to_paper"):
        text += (
            f"The study reports a test MSE of {metrics['paper']['test_mse']} px² on Helen; the protocol table "
            "above says how far the two can be compared."
        )
    return text
