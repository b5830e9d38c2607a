"""Explore a finished run's test faces: choose a face by name, by rank or by error; see its
crop with the truth and the prediction, each point's error coloured by size, its MSE and NME,
and its saliency on demand; sort and filter by a point group's error (jaw, eyes, mouth ...);
compare two runs on the same face.

It reads only the run folder (``eval/predictions.npz``, the test cache, ``params.yaml``) and the
model file. The logic lives here, where the tests reach it; ``explore(run)`` puts it behind
ipywidgets in JupyterLab, and ``static_summary`` stands in for it in an exported HTML page,
where widgets cannot run.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics as M
from ..model import REFERENCE_SIZE
from ..runfolder import RunFolder
from ..schemes import Scheme, scheme_for_points

MOUTH = ("outer_lips", "inner_lips")


@dataclass
class RunFaces:
    """A run's test faces as the explorer shows them: crops, truth and prediction (crop pixels),
    per-image MSE (px² of the 256 frame) and NME (as the run's metrics: photo pixels)."""
    run: RunFolder
    names: list[str]
    images: np.ndarray
    true: np.ndarray
    pred: np.ndarray
    mse: np.ndarray
    nme: np.ndarray
    norm: str  # the NME's normalisation: "oc" (outer eye corners) or "io" (eye centres), as metrics.NORMALISATIONS
    photo_true: np.ndarray
    photo_pred: np.ndarray
    scheme: Scheme

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunFaces":
        from .. import params as P
        from ..prepare import load_cache, load_sources

        run = RunFolder(run_dir)
        if not run.predictions.exists():
            raise FileNotFoundError(f"{run.predictions}: missing; run notebook 04_evaluate first")
        p = np.load(run.predictions)
        cache = run.cache_dir(P.load(run.params)["data"]["cache_dir"]) / "test"
        test = load_cache(cache)
        names = [str(n) for n in p["names"]]
        if names != list(test.names):
            raise ValueError(f"{run.predictions}: its faces are not those of the test cache {cache} (prepared again "
                             "since?); run 04_evaluate again")
        _, boxes = load_sources(cache)
        norm = "oc" if "model__nme_oc" in p else "io"
        size = test.images.shape[1]
        return cls(run, names, test.images, p["true"], p["model__pred"], p["model__mse"], p[f"model__nme_{norm}"], norm,
                   M.to_photo(p["true"], boxes, size), M.to_photo(p["model__pred"], boxes, size),
                   scheme_for_points(p["true"].shape[1]))

    @property
    def nme_label(self) -> str:
        return "outer eye corners" if self.norm == "oc" else "eye centres"

    @property
    def crop_size(self) -> int:
        return self.images.shape[1]

    def point_errors(self, i: int) -> np.ndarray:
        """Each point's error on face ``i``, pixels of the 256 frame."""
        return np.linalg.norm(self.pred[i] - self.true[i], axis=1) * (REFERENCE_SIZE / self.crop_size)

    @cached_property
    def table(self) -> pd.DataFrame:
        """One row per test face: its name, rank by MSE (1 = worst, as Fig. 5 ranks), MSE, NME
        and each point group's NME (the group's mean point error over the same normalising
        distance, photo pixels)."""
        norm = (M.outer_corners if self.norm == "oc" else M.inter_ocular)(self.photo_true, self.scheme)
        err = np.linalg.norm(self.photo_pred - self.photo_true, axis=2) / norm[:, None]
        rows = {"face": self.names, "mse": self.mse, "nme": self.nme}
        for group, indices in group_indices(self.scheme).items():
            rows[f"nme_{group}"] = err[:, indices].mean(1)
        t = pd.DataFrame(rows)
        t.insert(1, "rank", t["mse"].rank(ascending=False, method="first").astype(int))
        return t

    def sorted_by(self, column: str = "mse", worst_first: bool = True) -> pd.DataFrame:
        """The table sorted by ``column`` (``mse``, ``nme`` or ``nme_<group>``)."""
        if column not in self.table.columns:
            raise KeyError(f"no column {column!r}; choose one of {', '.join(self.table.columns[2:])}")
        return self.table.sort_values(column, ascending=not worst_first, kind="stable")

    def filtered(self, column: str = "mse", minimum: float = 0.0, worst_first: bool = True) -> pd.DataFrame:
        """``sorted_by``, keeping the faces whose ``column`` is at least ``minimum``: e.g. every
        face whose jaw NME is above 0.08."""
        t = self.sorted_by(column, worst_first)
        return t[t[column] >= minimum]

    def index(self, face: str | int) -> int:
        """A face by name, or by rank (1 = the worst by MSE)."""
        if isinstance(face, (int, np.integer)):
            if not 1 <= face <= len(self.names):
                raise IndexError(f"rank {face}: the run has {len(self.names)} test faces (ranks 1 to {len(self.names)})")
            return int(self.table.index[self.table["rank"] == face][0])
        if face not in self.names:
            raise KeyError(f"no test face named {face!r} in {self.run.root}")
        return self.names.index(face)

    def saliency(self, i: int, gradient=None) -> tuple[np.ndarray, np.ndarray]:
        """The network's input for face ``i`` and its saliency max_c |dL/dI| (the model file's
        view), computed by ``gradient``: notebook 05's ``saliency`` cell (as saved, when not given)."""
        from ..cells import study
        from ..model import load_model_file
        from ..saliency import network_inputs, saliency_maps

        gradient = gradient or study("05_figures").saliency
        model, info = load_model_file(self.run.model_file)
        sal = saliency_maps(gradient, model, self.images[i : i + 1], self.true[i : i + 1], info.input_size, "cpu", info.view)
        return network_inputs(self.images[i : i + 1], info.input_size, info.view)[0], sal[0]


def group_indices(scheme: Scheme) -> dict[str, list[int]]:
    """The point groups a student filters by: jaw, nose, eyes, brows, mouth (twin groups merged:
    eye_a and eye_b are "eyes", the lips are "mouth", nose_bridge and nose_base are "nose")."""
    out: dict[str, list[int]] = {}
    for g in scheme.groups:
        part = g.name.split("_")[0]
        name = "mouth" if g.name in MOUTH else part + "s" if part in ("eye", "brow") else part
        out.setdefault(name, []).extend(g.indices)
    return out


def face_figure(faces: RunFaces, i: int, saliency: bool = False, title: str | None = None,
                error_max: float | None = None):
    """Face ``i``: its crop with the truth (green contours) and the prediction (points coloured
    by their error, px of the 256 frame, up to ``error_max``: by default this face's largest);
    with ``saliency`` a second panel of dL/dI."""
    import matplotlib.pyplot as plt

    from ..figures import TRUE_COLOUR, draw_landmarks, show_image

    err = faces.point_errors(i)
    fig, axes = plt.subplots(1, 2 if saliency else 1, figsize=(11 if saliency else 6, 5.4), squeeze=False)
    ax = axes[0, 0]
    row = faces.table.iloc[i]
    show_image(ax, faces.images[i], title or f"{faces.names[i]} (rank {row['rank']} of {len(faces.names)} by MSE)\n"
               f"MSE {row['mse']:.1f} px², NME {row['nme']:.4f} ({faces.nme_label})")
    draw_landmarks(ax, faces.true[i], faces.scheme, TRUE_COLOUR, "truth", size=3)
    top = float(err.max()) if error_max is None else error_max
    dots = ax.scatter(*faces.pred[i].T, c=err, s=14, cmap="plasma", vmin=0, vmax=max(top, 1e-6),
                      label="prediction", zorder=3)
    fig.colorbar(dots, ax=ax, fraction=0.046, pad=0.02, label="point error (px, 256 frame)")
    ax.legend(loc="lower left", fontsize=7)
    if saliency:
        seen, sal = faces.saliency(i)
        show_image(axes[0, 1], seen, "what the network saw, and max_c |dL/dI|")
        h, w = seen.shape[:2]
        shown = axes[0, 1].imshow(sal / (sal.max() + 1e-12), extent=(0, w, h, 0), cmap="inferno", alpha=0.6,
                                  vmin=0, vmax=1)
        fig.colorbar(shown, ax=axes[0, 1], fraction=0.046, pad=0.02, label="|dL/dI| / its maximum")
    fig.tight_layout()
    return fig


def compare_figure(a: RunFaces, b: RunFaces, name: str):
    """The same test face as two runs predicted it, side by side, each in its own crop, the
    point errors on one colour scale (the larger of the two faces' largest errors)."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 5.4))
    top = max(float(f.point_errors(f.index(name)).max()) for f in (a, b))
    for k, (faces, label) in enumerate(((a, a.run.root.name), (b, b.run.root.name))):
        i = faces.index(name)
        row = faces.table.iloc[i]
        single = face_figure(faces, i, title=f"{label}: {name}\nMSE {row['mse']:.1f} px², NME {row['nme']:.4f}",
                             error_max=top)
        single.canvas.draw()
        ax = fig.add_subplot(1, 2, k + 1)
        ax.imshow(np.asarray(single.canvas.buffer_rgba()))
        ax.axis("off")
        plt.close(single)
    fig.tight_layout()
    return fig


def static_summary(faces: RunFaces, n: int = 10) -> str:
    """What the explorer shows, as HTML for a page where widgets cannot run: the ``n`` worst
    faces by MSE with each group's NME, and the groups' mean NME over all faces."""
    t = faces.sorted_by("mse").head(n)
    groups = [c for c in faces.table.columns if c.startswith("nme_")]
    means = ", ".join(f"{c[4:]} {faces.table[c].mean():.4f}" for c in groups)
    head = "".join(f"<th>{h}</th>" for h in ["face", "rank", "MSE (px²)", "NME", *[c[4:] for c in groups]])
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in [
        r["face"], r["rank"], f"{r['mse']:.1f}", f"{r['nme']:.4f}", *[f"{r[c]:.4f}" for c in groups]]) + "</tr>"
        for _, r in t.iterrows())
    return ("<p><b>The explorer needs a live Python kernel</b> (open this notebook in JupyterLab); this page is "
            f"its static summary. Mean NME by point group ({faces.nme_label}, photo pixels): {means}. The {n} worst "
            f"test faces by MSE (px² of the 256 frame):</p><table><tr>{head}</tr>{body}</table>")


def explore(run_dir: str | Path, other: str | Path | None = None):
    """The explorer as ipywidgets: a face by name or rank, sorted by any error column and
    filtered to the faces above a group's error; saliency on demand; with ``other`` (a second
    run folder) the same face as both runs predicted it."""
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    faces = RunFaces.load(run_dir)
    second = RunFaces.load(other) if other else None
    columns = list(faces.table.columns[2:])
    sort = w.Dropdown(options=columns, value="mse", description="sort by")
    worst = w.Checkbox(value=True, description="worst first")
    minimum = w.FloatText(value=0.0, description="at least", step=0.01)
    face = w.Dropdown(description="face")
    rank = w.BoundedIntText(value=1, min=1, max=len(faces.names), description="MSE rank")
    saliency = w.Checkbox(value=False, description="saliency")
    compare = w.Checkbox(value=False, description=f"compare with {Path(other).name}" if other else "compare",
                         disabled=second is None)
    out, listing = w.Output(), w.Output()

    def refresh_list(*_):
        order = faces.filtered(sort.value, minimum.value, worst.value)
        face.options = [(f"{r['face']}  ({sort.value} {r[sort.value]:.4g})", r["face"]) for _, r in order.iterrows()]
        with listing:
            listing.clear_output(wait=True)
            print(f"{len(order)} of {len(faces.names)} faces with {sort.value} >= {minimum.value:g}")
            display(order.head(8).style.format(precision=4).hide(axis="index"))

    def by_rank(*_):
        name = faces.names[faces.index(int(rank.value))]
        if name not in [v for _, v in face.options]:
            minimum.value = 0.0  # the face must be on the list to be shown
        face.value = name

    def show(*_):
        if face.value is None:
            return
        with out:
            out.clear_output(wait=True)
            fig = (compare_figure(faces, second, face.value) if compare.value and second is not None
                   else face_figure(faces, faces.index(face.value), saliency.value))
            plt.show(fig)

    for control in (sort, worst, minimum):
        control.observe(refresh_list, names="value")
    rank.observe(by_rank, names="value")
    for control in (face, saliency, compare):
        control.observe(show, names="value")
    refresh_list()
    show()
    return w.VBox([w.HBox([sort, worst, minimum]), listing, w.HBox([face, rank, saliency, compare]), out])
