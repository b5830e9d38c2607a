"""One function per figure of the report. Each takes arrays and returns a matplotlib figure;
``save`` writes it atomically. Images are shown with pixel-corner coordinates
(``extent=(0, W, H, 0)``), the convention of the landmarks."""

from __future__ import annotations


from pathlib import Path

import matplotlib
import matplotlib.ticker
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lmkit.study.schemes import Scheme

from lmkit.use.drawing import BOX_COLOUR, PRED_COLOUR, TRUE_COLOUR  # noqa: F401 (one place for the colours)
from lmkit.run.params import Params


def show_image(ax, image: np.ndarray, title: str | None = None) -> None:
    h, w = image.shape[:2]
    ax.imshow(image, extent=(0, w, h, 0), interpolation="bilinear")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)


def draw_landmarks(
    ax, pts: np.ndarray, scheme: Scheme, colour: str, label: str | None = None, size: float = 4
) -> None:
    """Points plus the scheme's contours (closed groups are closed)."""
    for g in scheme.groups:
        p = pts[g.indices]
        if g.closed:
            p = np.concatenate([p, p[:1]])
        ax.plot(p[:, 0], p[:, 1], "-", color=colour, lw=0.8, alpha=0.8)
    ax.scatter(pts[:, 0], pts[:, 1], s=size, c=colour, label=label, linewidths=0)


def sample_figure(image, landmarks, scheme: Scheme, title: str) -> plt.Figure:
    """One face with its landmarks, coloured by the scheme's groups (the study's Fig. 1).

    Used in: 01_prepare, "One face, from its box to what the network sees"."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    show_image(ax, image, title)
    draw_landmarks(ax, landmarks, scheme, TRUE_COLOUR, size=6)
    fig.tight_layout()
    return fig


def scheme_figure(mean_shape: np.ndarray, scheme: Scheme, title: str) -> plt.Figure:
    """The landmark scheme on the mean training shape: each group's contour in its own colour
    (named in the legend), every point's number beside it, the outer eye corners ringed and
    the mirror pairs of the corners named: which number is which point.

    Used in: 01_prepare, "Which number is which point"."""
    m = np.asarray(mean_shape, dtype=np.float64)
    size = 11 if scheme.n_points > 100 else 8
    span = np.ptp(m, axis=0) + 1e-9
    fig, ax = plt.subplots(
        figsize=(size * span[0] / span[1] + 3.2, size)
    )  # the face's own shape, and the legend
    colours = sns.color_palette("tab10", len(scheme.groups))
    centre = m.mean(0)
    for g, colour in zip(scheme.groups, colours):
        p = m[g.indices]
        q = np.concatenate([p, p[:1]]) if g.closed else p
        ax.plot(
            q[:, 0], q[:, 1], "-", color=colour, lw=1.2, label=f"{g.name} {g.start}-{g.stop - 1}"
        )
        ax.scatter(p[:, 0], p[:, 1], s=10, color=colour, zorder=3)
        ax.scatter(
            *p[0], s=60, facecolors="none", edgecolors=colour, zorder=3
        )  # where the contour starts
    step = (
        1 if scheme.n_points <= 68 else 2
    )  # every point on 68; every other one (and each group's ends) on 194
    for i, (x, y) in enumerate(m):
        g = next(g for g in scheme.groups if g.start <= i < g.stop)
        if (i - g.start) % step and i != g.stop - 1:
            continue
        out = np.array([x, y]) - centre
        out = out / (np.linalg.norm(out) + 1e-9)
        away = 13 if i in scheme.outer_eye_corners else 7  # outside the corner's ring
        ax.annotate(
            str(i),
            (x, y),
            xytext=(out[0] * away, out[1] * away),
            textcoords="offset points",
            fontsize=6,
            ha="center",
            va="center",
            color="#333",
            zorder=5,
        )
    if scheme.outer_eye_corners:
        c = m[list(scheme.outer_eye_corners)]
        ax.scatter(
            c[:, 0],
            c[:, 1],
            s=160,
            facecolors="none",
            edgecolors="black",
            lw=1.2,
            zorder=4,
            label=f"outer eye corners {scheme.outer_eye_corners[0]}, {scheme.outer_eye_corners[1]}",
        )
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.axis("off")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_title(
        f"{title}\n{scheme.name}: {scheme.n_points} points; a ring marks where each contour starts"
        + ("" if step == 1 else "; every other number shown, and each group's last"),
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def loss_figure(history: pd.DataFrame, dataset: str, reference: dict | None = None) -> plt.Figure:
    """Train and validation MSE per epoch; with ``reference`` (the study's published numbers,
    only where the data are comparable) its best validation and test MSE as lines.

    Used in: 03_train, "Training"."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(history["epoch"], history["train_mse"], "o-", ms=3, label="train (augmented)")
    ax.plot(history["epoch"], history["val_mse"], "o-", ms=3, label="validation")
    if reference:
        ax.axhline(
            reference["best_val_mse"],
            color="grey",
            ls=":",
            label=f"study: best validation {reference['best_val_mse']}",
        )
        ax.axhline(
            reference["test_mse"],
            color="grey",
            ls="--",
            label=f"study: test {reference['test_mse']}",
        )
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(
        matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    )  # 60, not 6×10¹
    ax.yaxis.set_minor_formatter(
        matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (px² of the 256x256 input)")
    ax.set_title(f"Loss per epoch: {dataset}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig


def samples_figure(split, n: int = 4) -> plt.Figure:
    """The first ``n`` prepared faces of a split with their landmarks, by scheme group.

    Used in: 01_prepare, "One face, from its box to what the network sees"."""
    from lmkit.study.schemes import scheme_for_points

    scheme = scheme_for_points(split.landmarks.shape[1])
    fig, axes = plt.subplots(1, n, figsize=(3.5 * n, 3.8))
    for ax, i in zip(np.atleast_1d(axes), range(min(n, len(split)))):
        show_image(ax, split.images[i], split.names[i])
        draw_landmarks(ax, split.landmarks[i], scheme, TRUE_COLOUR)
    fig.tight_layout()
    return fig


def mse_distribution_figure(per_image: dict[str, np.ndarray], dataset: str) -> plt.Figure:
    """Histogram of per-image test MSE for each method (px² of the 256x256 input)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    df = pd.concat([pd.DataFrame({"MSE": v, "method": k}) for k, v in per_image.items()])
    sns.histplot(df, x="MSE", hue="method", bins=30, log_scale=True, element="step", ax=ax)
    ax.set_xlabel("per-image test MSE (px² of the 256x256 input, log scale)")
    ax.set_ylabel("test images")
    ax.set_title(f"Distribution of per-image test MSE: {dataset}", fontsize=10)
    fig.tight_layout()
    return fig


def detections_figure(images, true, pred, labels: list[str], scheme: Scheme) -> plt.Figure:
    """Six detections in two rows (the 3 best, then the 3 worst): truth and prediction."""
    fig, axes = plt.subplots(2, 3, figsize=(10, 8.2))
    for ax, img, t, p, lab in zip(axes.ravel(), images, true, pred, labels):
        show_image(ax, img, lab)
        draw_landmarks(ax, t, scheme, TRUE_COLOUR, "ground truth", size=3)
        draw_landmarks(ax, p, scheme, PRED_COLOUR, "prediction", size=3)
    axes[0, 0].legend(loc="lower left", fontsize=7)
    fig.suptitle("Top: 3 best test detections.  Bottom: 3 worst.", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=3.0)  # room for each face's two-line title
    return fig


def augmented_figure(images, landmarks, scheme: Scheme) -> plt.Figure:
    """Training faces as the network sees them: one augmented draw each (rotation, crop,
    intensity, flips and box jitter as the params ask), the landmarks moved with the pixels.

    Used in: 01_prepare, "One face, from its box to what the network sees"; 03_train, "Before training: what
    the network is shown"."""
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.7), squeeze=False)
    for ax, img, pts in zip(axes[0], images, landmarks):
        show_image(ax, img)
        draw_landmarks(ax, pts, scheme, TRUE_COLOUR, size=2)
    fig.suptitle(
        f"What training shows the network: augmented {images.shape[1]}x{images.shape[2]} inputs",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def schedule_figure(lr: list[float]) -> plt.Figure:
    """The learning rate of every training epoch.

    Used in: 03_train, "Before training: what the network is shown"."""
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.plot(range(1, len(lr) + 1), lr, "-")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning-rate schedule (warm-up, then the schedule)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def draw_box(ax, box, colour: str = BOX_COLOUR, label: str | None = None) -> None:
    x0, y0, x1, y1 = box
    ax.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], "-", color=colour, lw=1.2, label=label)


def photos_figure(shown: list[tuple], scheme: Scheme) -> plt.Figure:
    """Whole photos with the face detector's box, the model's points and the annotation:
    ``shown`` holds (photo, box, points, truth, label) in photo pixels."""
    fig, axes = plt.subplots(
        1, max(1, len(shown)), figsize=(4.2 * max(1, len(shown)), 4.6), squeeze=False
    )
    for ax, (image, box, pts, true, label) in zip(axes[0], shown):
        show_image(ax, image, label)
        draw_box(ax, box, label="detector box")
        draw_landmarks(ax, true, scheme, TRUE_COLOUR, "annotation", size=2)
        draw_landmarks(ax, pts, scheme, PRED_COLOUR, "prediction", size=2)
    if shown:
        axes[0, 0].legend(loc="lower left", fontsize=7)
    else:
        axes[0, 0].axis("off")
        axes[0, 0].text(0.5, 0.5, "the detector found no test face", ha="center")
    fig.suptitle(
        "The model end to end on original test photos (10th, 50th, 90th percentile of NME)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def saliency_figure(images, maps, labels: list[str]) -> plt.Figure:
    """Saliency maps (N, S, S) over the crops, in the layout of the detections figure."""
    fig, axes = plt.subplots(2, 3, figsize=(10, 7.6))
    shown = None
    for ax, img, m, lab in zip(axes.ravel(), images, maps, labels):
        show_image(ax, img, lab)
        h, w = img.shape[:2]
        shown = ax.imshow(
            m / (m.max() + 1e-12),
            extent=(0, w, h, 0),
            cmap="inferno",
            alpha=0.6,
            interpolation="bilinear",
            vmin=0,
            vmax=1,
        )
    h, w = images[0].shape[:2] if len(images) else (0, 0)
    fig.suptitle(
        f"Gradient saliency: max over channels of |dL/dI| on the network's own {w}x{h} view of each crop\n"
        "(top: the 3 best, bottom: the 3 worst); each map divided by its own maximum",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 0.92, 0.95), h_pad=2.0)
    if shown is not None:
        bar = fig.colorbar(shown, cax=fig.add_axes((0.93, 0.15, 0.015, 0.7)))
        bar.set_label("|dL/dI| / its maximum in the image")
    return fig


def ced_figure(
    nmes: dict[str, np.ndarray],
    max_error: float,
    dataset: str,
    norm_label: str = "inter-ocular",
    frame: str = "points in pixels of the original photo",
) -> plt.Figure:
    """The cumulative error distribution of each method's per-face NME (``lmkit.report.evaluation.score``
    computes them with the points mapped back to the photo, the field's convention).

    Used in: 04_evaluate, "Beside the study"."""
    from lmkit.study.metrics import ced

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, nme in nmes.items():
        x, y = ced(nme, max_error)
        ok = np.isfinite(nme)
        ax.plot(x, y, label=f"{name} (mean NME {np.mean(nme[ok]):.3f})")
    ax.set_xlabel(f"NME ({norm_label} normalised; {frame})")
    ax.set_ylabel("fraction of test images")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.set_title(f"Cumulative error distribution: {dataset}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def search_figure(trials: pd.DataFrame, lr_range=None, wd_range=None) -> plt.Figure:
    """The search's trials over the ranges it drew from (``search.lr_range``,
    ``search.weight_decay_range``: the axes span them, so a reader sees where in the searched
    space the trials fell), coloured by their best validation MSE; the winner ringed.

    Used in: 02_hpsearch, "The objective"."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    done = trials[trials["state"] == "COMPLETE"]
    sc = ax.scatter(
        done["lr"],
        done["weight_decay"],
        c=done["val_mse"],
        cmap="viridis_r",
        s=60,
        norm=matplotlib.colors.LogNorm(),
    )
    if len(done):
        best = done.loc[done["val_mse"].idxmin()]
        ax.scatter(
            [best["lr"]],
            [best["weight_decay"]],
            s=200,
            facecolors="none",
            edgecolors="red",
            label="best",
        )
        ax.legend()
    ax.set_xscale("log")
    ax.set_yscale("log")
    for limits, set_lim in ((lr_range, ax.set_xlim), (wd_range, ax.set_ylim)):
        if limits is not None:
            lo, hi = sorted(float(v) for v in limits)
            set_lim(lo / 1.25, hi * 1.25)  # the searched range and a margin for the markers
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(numticks=12))
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(numticks=12))
    ax.set_xlabel("learning rate (searched: the axis)" if lr_range is not None else "learning rate")
    ax.set_ylabel("weight decay (searched: the axis)" if wd_range is not None else "weight decay")
    fig.colorbar(sc, label="best validation MSE (px² of 256x256)")
    ax.set_title(f"Random search, {len(done)} trials", fontsize=10)
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, path: Path, dpi: int = 110) -> Path:
    from lmkit.run.folder import atomic_write

    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return Path(path)


def report_figures(run, params: Params, gradient) -> dict:
    """Every figure of the report, saved to ``figures/``; returns their paths by key. Fig. 6's
    saliency is ``gradient(model, x, target)``: notebook 05's ``saliency``.

    Used in: 05_figures, "Saliency, dL/dI"."""
    import pandas as pd

    from lmkit.study.metrics import mean_shape
    from lmkit.data.faces import comparable_to_paper, load_data
    from lmkit.study.model import pick_device
    from lmkit.use.packaging import load_model
    from lmkit.report.evaluation import PAPER
    from lmkit.run.folder import read_json
    from lmkit.report.predictions import Predictions
    from lmkit.study.saliency import network_inputs, saliency_maps

    d = load_data(run, params)
    test, scheme, dataset = d.test, d.scheme, d.dataset
    p = Predictions.load(run.predictions)
    six = np.concatenate([p.best, p.worst])
    norm = p.headline_norm
    norm_label = {"oc": "outer eye corners", "io": "inter-ocular"}[norm]
    labels = [
        f"{'best' if k < 3 else 'worst'} {k % 3 + 1}: {test.names[i]}\n"
        f"MSE {p.mse()[i]:.1f} px², NME {p.nme('model', norm)[i]:.3f} ({norm_label})"
        for k, i in enumerate(six)
    ]
    device = pick_device(params.system.device)
    model, info = load_model(run, params, device)
    size = info.input_size
    maps = saliency_maps(
        gradient, model, test.images[six], test.landmarks[six], size, device, info.view
    )
    small = network_inputs(test.images[six], size, info.view)
    train_img, train_pts = d.train
    frame = f"points in {read_json(run.metrics, '04_evaluate')['nme_frame']}"  # as 04 wrote it
    figs = {
        "scheme": scheme_figure(
            mean_shape(d.train.landmarks), scheme, f"mean training shape, {dataset}"
        ),
        "fig1_sample": sample_figure(
            train_img[0],
            train_pts[0],
            scheme,
            f"{dataset}\n{train_img.shape[1]}x{train_img.shape[2]} crop, {scheme.name}",
        ),
        "fig3_loss": loss_figure(
            pd.read_csv(run.history), dataset, PAPER if comparable_to_paper(d) else None
        ),
        "fig4_test_mse": mse_distribution_figure(
            {"ResNet18": p.mse(), "mean shape": p.mse("mean_shape")}, dataset
        ),
        "fig5_best_worst": detections_figure(
            test.images[six], p.true[six], p.pred()[six], labels, scheme
        ),
        "fig6_saliency": saliency_figure(small, maps, labels),
        "ced": ced_figure(p.nme_by_method("io"), params.eval.ced_max, dataset, frame=frame),
    }
    if p.has("model", "oc"):
        figs["ced_oc"] = ced_figure(
            p.nme_by_method("oc"), params.eval.ced_max, dataset, "outer eye corners", frame=frame
        )
    if p.has("model_detector"):
        figs["photos"] = run_photos_figure(p, run, params, scheme, test.images.shape[1])
    if run.trials.exists():
        figs["search"] = search_figure(
            pd.read_csv(run.trials), params.search.lr_range, params.search.weight_decay_range
        )
    paths = {}
    for key, fig in figs.items():
        paths[key] = save(fig, run.figure(key))
        plt.close(fig)
    return paths


def run_photos_figure(p, run, params: Params, scheme, crop_size: int):
    """The model end to end on three original test photos (the detector's box, the points),
    at the 10th, 50th and 90th percentile of its detector-box NME (``p``: the run's ``Predictions``)."""
    from lmkit.data.prepare import crop_to_photo, load_sources
    from lmkit.data.readers import load_image

    sources, crop_boxes = load_sources(run.cache_dir(params.data.cache_dir) / "test")
    nme = p.nme("model_detector", "io")
    found = np.where(np.isfinite(nme))[0]
    ranked = found[np.argsort(nme[found], kind="stable")]
    pick = [ranked[int(q * (len(ranked) - 1))] for q in (0.1, 0.5, 0.9)] if len(ranked) else []
    shown = []
    for i in pick:
        to_photo = crop_to_photo(crop_boxes[i], crop_size)
        shown.append(
            (
                load_image(Path(sources[i])),
                p.boxes("model_detector")[i],
                to_photo(p.pred("model_detector")[i]),
                to_photo(p.true[i]),
                f"{Path(sources[i]).name}: NME {nme[i]:.3f} (inter-ocular)",
            )
        )
    return photos_figure(shown, scheme)
