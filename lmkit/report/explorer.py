"""Explore a finished run's test faces: choose a face by name, by rank, with previous / next or
by error; see its crop with the truth and the prediction, each point's error coloured by size,
its MSE and NME and its errors by point group; its saliency, its original photo with the face
detector's box, and the same face in another run folder, on one colour scale.

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

from lmkit.study.metrics import inter_ocular, outer_corners, to_photo
from lmkit.study.modelinfo import REFERENCE_SIZE
from lmkit.report.predictions import Predictions
from lmkit.run.folder import RunFolder
from lmkit.study.schemes import Scheme, scheme_for_points

MOUTH = ("outer_lips", "inner_lips")


@dataclass
class RunFaces:
    """A run's test faces as the explorer shows them: crops, truth and prediction (crop pixels),
    per-image MSE (px² of the 256 frame) and NME (as the run's metrics: photo pixels).

    Used in: 05_figures, "Explore the test faces yourself"."""

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
        from lmkit.run import params as P
        from lmkit.data.prepare import load_cache, load_sources

        run = RunFolder(run_dir)
        if not run.predictions.exists():
            raise FileNotFoundError(f"{run.predictions}: missing; run notebook 04_evaluate first")
        p = Predictions.load(run.predictions)
        cache = run.cache_dir(P.load(run.params).data.cache_dir) / "test"
        test = load_cache(cache)
        names = p.names
        if names != list(test.names):
            raise ValueError(
                f"{run.predictions}: its faces are not those of the test cache {cache} (prepared again "
                "since?); run 04_evaluate again"
            )
        _, boxes = load_sources(cache)
        norm, size = p.headline_norm, test.images.shape[1]
        return cls(
            run,
            names,
            test.images,
            p.true,
            p.pred(),
            p.mse(),
            p.nme("model", norm),
            norm,
            to_photo(p.true, boxes, size),
            to_photo(p.pred(), boxes, size),
            scheme_for_points(p.true.shape[1]),
        )

    @cached_property
    def params(self) -> dict:
        from lmkit.run import params as P

        return P.load(self.run.params)

    @property
    def nme_label(self) -> str:
        return "outer eye corners" if self.norm == "oc" else "eye centres"

    @property
    def crop_size(self) -> int:
        return self.images.shape[1]

    def point_errors(self, i: int) -> np.ndarray:
        """Each point's error on face ``i``, pixels of the 256 frame."""
        return np.linalg.norm(self.pred[i] - self.true[i], axis=1) * (
            REFERENCE_SIZE / self.crop_size
        )

    @cached_property
    def table(self) -> pd.DataFrame:
        """One row per test face: its name, rank by MSE (1 = worst, as Fig. 5 ranks), MSE, NME
        and each point group's NME (the group's mean point error over the same normalising
        distance, photo pixels)."""
        norm = (outer_corners if self.norm == "oc" else inter_ocular)(self.photo_true, self.scheme)
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
            raise KeyError(
                f"no column {column!r}; choose one of {', '.join(self.table.columns[2:])}"
            )
        return self.table.sort_values(column, ascending=not worst_first, kind="stable")

    def filtered(
        self, column: str = "mse", minimum: float = 0.0, worst_first: bool = True
    ) -> pd.DataFrame:
        """``sorted_by``, keeping the faces whose ``column`` is at least ``minimum``: e.g. every
        face whose jaw NME is above 0.08."""
        t = self.sorted_by(column, worst_first)
        return t[t[column] >= minimum]

    def index(self, face: str | int) -> int:
        """A face by name, or by rank (1 = the worst by MSE)."""
        if isinstance(face, (int, np.integer)):
            if not 1 <= face <= len(self.names):
                raise IndexError(
                    f"rank {face}: the run has {len(self.names)} test faces (ranks 1 to {len(self.names)})"
                )
            return int(self.table.index[self.table["rank"] == face][0])
        if face not in self.names:
            raise KeyError(f"no test face named {face!r} in {self.run.root}")
        return self.names.index(face)

    def saliency(self, i: int, gradient=None) -> tuple[np.ndarray, np.ndarray]:
        """The network's input for face ``i`` and its saliency max_c |dL/dI| (the model file's
        view), computed by ``gradient``: notebook 05's ``saliency`` cell (as saved, when not given)."""
        from lmkit.study.cells import study
        from lmkit.study.model import load_model_file
        from lmkit.study.saliency import network_inputs, saliency_maps

        gradient = gradient or study("05_figures").saliency
        model, info = load_model_file(self.run.model_file)
        sal = saliency_maps(
            gradient,
            model,
            self.images[i : i + 1],
            self.true[i : i + 1],
            info.input_size,
            "cpu",
            info.view,
        )
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


POINT_CMAP = (
    "cool"  # cyan (small error) to magenta (large): bright on dark skin, edged in black on light
)


def draw_face(ax, faces: RunFaces, i: int, error_max: float, title: str):
    """Face ``i`` on ``ax``: its crop, the truth (green contours) and the prediction, each point
    coloured by its error (px of the 256 frame) on the scale 0..``error_max``. Returns the points."""
    from matplotlib.lines import Line2D

    from lmkit.report.figures import TRUE_COLOUR, draw_landmarks, show_image

    show_image(ax, faces.images[i], title)
    draw_landmarks(ax, faces.true[i], faces.scheme, TRUE_COLOUR, "truth", size=3)
    dots = ax.scatter(
        *faces.pred[i].T,
        c=faces.point_errors(i),
        s=16,
        cmap=POINT_CMAP,
        vmin=0,
        vmax=max(error_max, 1e-6),
        edgecolors="black",
        linewidths=0.4,
        zorder=3,
    )
    handles = [
        Line2D([], [], color=TRUE_COLOUR, marker="o", markersize=3, label="truth"),
        Line2D(
            [],
            [],
            linestyle="",
            marker="o",
            markerfacecolor="white",
            markeredgecolor="black",
            markersize=5,
            label="prediction (colour: its error)",
        ),
    ]
    ax.legend(handles=handles, loc="lower left", fontsize=7)
    return dots


def _caption(faces: RunFaces, i: int, label: str | None = None) -> str:
    row = faces.table.iloc[i]
    return (
        f"{label + ': ' if label else ''}{faces.names[i]} (rank {row['rank']} of {len(faces.names)} by MSE)\n"
        f"MSE {row['mse']:.1f} px² (256 frame), NME {row['nme']:.4f} ({faces.nme_label}, photo px)"
    )


def _draw_saliency(ax, faces: RunFaces, i: int, fig):
    from lmkit.report.figures import show_image

    seen, sal = faces.saliency(i)
    show_image(ax, seen, f"the network's {seen.shape[0]} px view and max_c |dL/dI|")
    h, w = seen.shape[:2]
    shown = ax.imshow(
        sal / (sal.max() + 1e-12), extent=(0, w, h, 0), cmap="inferno", alpha=0.6, vmin=0, vmax=1
    )
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="|dL/dI| / its maximum")


def face_figure(
    faces: RunFaces,
    i: int,
    saliency: bool = False,
    title: str | None = None,
    error_max: float | None = None,
):
    """Face ``i``: its crop with the truth (green contours) and the prediction (points coloured
    by their error, px of the 256 frame, up to ``error_max``: by default this face's largest);
    with ``saliency`` a second panel of dL/dI on the network's view."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, 2 if saliency else 1, figsize=(11 if saliency else 6, 5.4), squeeze=False
    )
    top = float(faces.point_errors(i).max()) if error_max is None else error_max
    dots = draw_face(axes[0, 0], faces, i, top, title or _caption(faces, i))
    fig.colorbar(dots, ax=axes[0, 0], fraction=0.046, pad=0.02, label="point error (px, 256 frame)")
    if saliency:
        _draw_saliency(axes[0, 1], faces, i, fig)
    fig.tight_layout()
    return fig


def compare_figure(a: RunFaces, b: RunFaces, name: str, saliency: bool = False):
    """The same test face as two runs predicted it, in one figure: each in its own crop, the point
    errors on one colour scale (the larger of the two faces' largest errors) with one colour bar;
    with ``saliency`` each run's dL/dI beneath its face."""
    import matplotlib.pyplot as plt

    rows = 2 if saliency else 1
    fig, axes = plt.subplots(rows, 2, figsize=(12, 5.6 * rows), squeeze=False)
    top = max(float(f.point_errors(f.index(name)).max()) for f in (a, b))
    for k, faces in enumerate((a, b)):
        i = faces.index(name)
        dots = draw_face(axes[0, k], faces, i, top, _caption(faces, i, faces.run.root.name))
        if saliency:
            _draw_saliency(axes[1, k], faces, i, fig)
    fig.colorbar(
        dots,
        ax=list(axes[0]),
        fraction=0.03,
        pad=0.02,
        label="point error (px, 256 frame), both runs",
    )
    return fig


def photo_figure(faces: RunFaces, i: int):
    """Face ``i`` on its original photo: the annotation crop box (green), the face detector's box
    (orange) and the points found from it (the run's end-to-end use), when the run has them."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from PIL import Image

    from lmkit.report.figures import TRUE_COLOUR, show_image
    from lmkit.data.prepare import load_sources

    sources, boxes = load_sources(faces.run.cache_dir(faces.params.data.cache_dir) / "test")
    photo = Path(sources[i])
    if not photo.is_file():
        return None
    p = Predictions.load(faces.run.predictions)
    fig, ax = plt.subplots(figsize=(7, 6))
    show_image(
        ax, np.asarray(Image.open(photo).convert("RGB")), f"{faces.names[i]}: the original photo"
    )
    x0, y0, x1, y1 = boxes[i]
    ax.add_patch(
        Rectangle(
            (x0, y0),
            x1 - x0,
            y1 - y0,
            fill=False,
            color=TRUE_COLOUR,
            lw=1.5,
            label="annotation crop",
        )
    )
    detected = p.has("model_detector")
    if detected and np.isfinite(p.boxes("model_detector")[i]).all():
        d0, e0, d1, e1 = p.boxes("model_detector")[i]
        ax.add_patch(
            Rectangle(
                (d0, e0),
                d1 - d0,
                e1 - e0,
                fill=False,
                color="orange",
                lw=1.5,
                label="face detector's box",
            )
        )
        pts = to_photo(p.pred("model_detector")[i : i + 1], boxes[i : i + 1], faces.crop_size)[0]
        ax.scatter(
            *pts.T,
            s=8,
            c="orange",
            edgecolors="black",
            linewidths=0.3,
            label="points from the detector's box",
        )
    elif detected:
        ax.set_title(ax.get_title() + " (the face detector found no face)")
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return fig


def group_errors_html(faces: RunFaces, i: int) -> str:
    """The face's error by point group beside the mean over all test faces (NME, photo pixels)."""
    row = faces.table.iloc[i]
    groups = [c for c in faces.table.columns if c.startswith("nme_")]
    cells = "".join(
        f"<tr><td>{c[4:]}</td><td>{row[c]:.4f}</td><td>{faces.table[c].mean():.4f}</td></tr>"
        for c in groups
    )
    return (
        f"<b>{faces.names[i]}</b>: NME by point group ({faces.nme_label}, photo px)<table><tr><th>group</th>"
        f"<th>this face</th><th>all faces</th></tr>{cells}</table>"
    )


def run_folders_beside(run_dir: str | Path) -> list[Path]:
    """The other finished run folders next to ``run_dir`` whose test faces are the same: the
    runs the explorer can compare with."""
    run = RunFolder(run_dir)
    mine = Predictions.load(run.predictions).names
    out = []
    for folder in sorted(
        p for p in run.root.resolve().parent.iterdir() if p.is_dir() and p != run.root.resolve()
    ):
        other = RunFolder(folder)
        try:
            if other.predictions.exists() and Predictions.load(other.predictions).names == mine:
                out.append(folder)
        except (OSError, ValueError, KeyError):
            continue
    return out


def static_summary(faces: RunFaces, n: int = 10) -> str:
    """What the explorer shows, as HTML for a page where widgets cannot run: the ``n`` worst
    faces by MSE with each group's NME, and the groups' mean NME over all faces.

    Used in: 05_figures, "Explore the test faces yourself"."""
    t = faces.sorted_by("mse").head(n)
    groups = [c for c in faces.table.columns if c.startswith("nme_")]
    means = ", ".join(f"{c[4:]} {faces.table[c].mean():.4f}" for c in groups)
    head = "".join(
        f"<th>{h}</th>" for h in ["face", "rank", "MSE (px²)", "NME", *[c[4:] for c in groups]]
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{v}</td>"
            for v in [
                r["face"],
                r["rank"],
                f"{r['mse']:.1f}",
                f"{r['nme']:.4f}",
                *[f"{r[c]:.4f}" for c in groups],
            ]
        )
        + "</tr>"
        for _, r in t.iterrows()
    )
    return (
        "<p><b>The explorer needs a live Python kernel</b> (open this notebook in JupyterLab); this page is "
        f"its static summary. Mean NME by point group ({faces.nme_label}, photo pixels): {means}. The {n} worst "
        f"test faces by MSE (px² of the 256 frame):</p><table><tr>{head}</tr>{body}</table>"
    )


def png(fig) -> bytes:
    """The figure as PNG bytes, at the inline backend's size; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def explore(run_dir: str | Path, other: str | Path | None = None):
    """The explorer as ipywidgets. It opens on the worst face by MSE; a face is chosen by name
    (the list, sorted by any error column and filtered to the faces above a value), by rank or
    with previous / next, and stays selected while it is listed. Beside it: its errors by point
    group, its saliency on demand, its original photo with the face detector's box, and the same
    face in another run folder (picked from those next to this one, or ``other``).

    Used in: 05_figures, "Explore the test faces yourself"."""
    import ipywidgets as w

    faces = RunFaces.load(run_dir)
    runs = {p.name: p for p in run_folders_beside(run_dir)}
    if other:
        runs.setdefault(Path(other).name, Path(other))
    loaded: dict[str, RunFaces] = {}
    columns = list(faces.table.columns[2:])
    sort = w.Dropdown(options=columns, value="mse", description="sort by")
    worst = w.Checkbox(value=True, description="worst first")
    minimum = w.FloatText(value=0.0, description="at least", step=0.01)
    face = w.Dropdown(description="face")
    rank = w.BoundedIntText(value=1, min=1, max=len(faces.names), description="MSE rank")
    back, forward = w.Button(description="previous"), w.Button(description="next")
    saliency = w.Checkbox(value=False, description="saliency")
    photo = w.Checkbox(value=False, description="original photo")
    compare = w.Dropdown(
        options=["(none)", *runs],
        value=Path(other).name if other else "(none)",
        description="compare with",
    )
    # figures as PNG image widgets and the list as HTML: set, never cleared and appended, so what the
    # browser shows is always the last picture whole (an Output widget cleared from a click's callback
    # showed a clipped sliver of the figure in JupyterLab 4)
    out, listing, note, groups = w.VBox(), w.HTML(), w.HTML(), w.HTML()
    state = {"syncing": False}
    figures: list = []  # what is shown now (the tests read it)

    def listed() -> list[str]:
        return [v for _, v in face.options]

    def refresh_list(*_):
        order = faces.filtered(sort.value, minimum.value, worst.value)
        keep = face.value
        state["syncing"] = True
        face.options = [
            (f"{r['face']}  ({sort.value} {r[sort.value]:.4g})", r["face"])
            for _, r in order.iterrows()
        ]
        face.value = keep if keep in listed() else (listed()[0] if listed() else None)
        state["syncing"] = False
        listing.value = (
            f"<p>{len(order)} of {len(faces.names)} faces with {sort.value} &ge; {minimum.value:g}</p>"
            + order.head(8).style.format(precision=4).hide(axis="index").to_html()
        )
        show()

    def by_rank(*_):
        if state["syncing"]:
            return
        name = faces.names[faces.index(int(rank.value))]
        if name not in listed():
            note.value = (
                f"rank {rank.value} ({name}) is not among the faces with {sort.value} >= "
                f"{minimum.value:g}: the filter was cleared to show it"
            )
            minimum.value = 0.0  # refreshes the list
        face.value = name

    def step(k):
        names = listed()
        if face.value in names and names:
            face.value = names[(names.index(face.value) + k) % len(names)]

    def show(*_):
        if state["syncing"] or face.value is None:
            return
        i = faces.index(face.value)
        state["syncing"] = True
        rank.value = int(
            faces.table.iloc[i]["rank"]
        )  # the rank box follows a face picked from the list
        state["syncing"] = False
        groups.value = group_errors_html(faces, i)
        if compare.value != "(none)" and compare.value not in loaded:
            loaded[compare.value] = RunFaces.load(runs[compare.value])
        figures[:] = [
            compare_figure(faces, loaded[compare.value], face.value, saliency.value)
            if compare.value != "(none)"
            else face_figure(faces, i, saliency.value)
        ]
        if photo.value:
            figures.append(photo_figure(faces, i))
        out.children = [
            w.HTML("the original photo is not on this machine (synthetic faces have none)")
            if fig is None
            else w.Image(value=png(fig), format="png")
            for fig in figures
        ]

    for control in (sort, worst, minimum):
        control.observe(refresh_list, names="value")
    rank.observe(by_rank, names="value")
    for control in (face, saliency, photo, compare):
        control.observe(show, names="value")
    back.on_click(lambda _: step(-1))
    forward.on_click(lambda _: step(1))
    refresh_list()  # opens on the worst face (the first of the list)
    box = w.VBox(
        [
            w.HBox([sort, worst, minimum]),
            listing,
            w.HBox([face, rank, back, forward]),
            w.HBox([saliency, photo, compare]),
            note,
            w.HBox([out, groups]),
        ]
    )
    box.controls = {
        "sort": sort,
        "worst": worst,
        "minimum": minimum,
        "face": face,
        "rank": rank,
        "previous": back,
        "next": forward,
        "saliency": saliency,
        "photo": photo,
        "compare": compare,
        "output": out,
        "listing": listing,
        "note": note,
        "groups": groups,
    }
    box.figures = figures
    return box
