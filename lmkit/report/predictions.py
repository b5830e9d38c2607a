"""A run's test predictions (``eval/predictions.npz``, written by 04_evaluate) as one object:
per method (``METHODS``' keys: ``model``, ``model_detector``, ``mean_shape``, ``dlib_hog``, ...)
its points, per-face MSE and NME, and its boxes where it has them; the true points, the face
names and Fig. 5's best and worst faces. The file's array names (``<method>__<what>``) are
composed here and nowhere else."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmkit.run.folder import atomic_write

# the evaluated methods, by key, with the name the report and the results page give them
METHODS = {
    "model": "ResNet18 (this run)",
    "model_detector": "ResNet18, its detector box",
    "mean_shape": "mean shape (baseline)",
    "ert": "ERT trained on this run's faces (dlib), annotation box",
    "dlib_hog": "dlib's shipped ERT (trained on 300-W, which holds these photos), its HOG box",
    "dlib_annotation": "dlib's shipped ERT (trained on 300-W, which holds these photos), annotation box",
}
NORMS = (
    "io",
    "oc",
)  # NME over the eye centres, over the outer eye corners (lmkit.study.metrics.NORMALISATIONS)


def key(method: str, what: str) -> str:
    """The file's name of one method's array (``pred``, ``mse``, ``nme_io``, ``boxes`` ...)."""
    if method not in METHODS:
        raise KeyError(f"unknown method {method!r} (one of {', '.join(METHODS)})")
    return f"{method}__{what}"


class Predictions:
    """The test predictions of a run (see the module's doc).

    Used in: 04_evaluate, "The study's two numbers, computed here"."""

    def __init__(self, arrays):
        self.arrays = dict(arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Predictions":
        with np.load(path) as f:
            return cls({k: f[k] for k in f.files})

    @classmethod
    def from_scores(
        cls,
        true,
        names,
        best,
        worst,
        per_method: dict[str, dict],
        extra: dict[str, dict] | None = None,
    ):
        """From each method's per-face arrays (``{"model": {"pred": ..., "mse": ..., "nme_io": ...}}``)
        and any more of a method's arrays (``extra``: its boxes)."""
        arrays = {"true": np.asarray(true), "names": np.array(names), "best": best, "worst": worst}
        for source in (per_method, extra or {}):
            for method, per in source.items():
                arrays.update({key(method, what): v for what, v in per.items()})
        return cls(arrays)

    def save(self, path: str | Path) -> Path:
        with atomic_write(Path(path)) as tmp:
            np.savez(tmp, **self.arrays)
        return Path(path)

    # the faces
    @property
    def true(self) -> np.ndarray:
        return self.arrays["true"]

    @property
    def names(self) -> list[str]:
        return [str(n) for n in self.arrays["names"]]

    @property
    def best(self) -> np.ndarray:
        return self.arrays["best"]

    @property
    def worst(self) -> np.ndarray:
        return self.arrays["worst"]

    # one method's arrays
    def has(self, method: str, norm: str | None = None) -> bool:
        return key(method, f"nme_{norm}" if norm else "pred") in self.arrays

    def pred(self, method: str = "model") -> np.ndarray:
        return self.arrays[key(method, "pred")]

    def mse(self, method: str = "model") -> np.ndarray:
        return self.arrays[key(method, "mse")]

    def nme(self, method: str = "model", norm: str = "io") -> np.ndarray:
        if norm not in NORMS:
            raise KeyError(f"unknown normalisation {norm!r} (one of {', '.join(NORMS)})")
        return self.arrays[key(method, f"nme_{norm}")]

    def boxes(self, method: str = "model_detector", kind: str = "boxes") -> np.ndarray:
        """A detector row's boxes: the detector's (``boxes``) or the crops cut from them (``crop_boxes``)."""
        return self.arrays[key(method, kind)]

    @property
    def headline_norm(self) -> str:
        """The NME the report leads with: over the outer eye corners where the scheme has them."""
        return "oc" if self.has("model", "oc") else "io"

    def nme_by_method(self, norm: str = "io") -> dict[str, np.ndarray]:
        """Per-face NMEs of every evaluated method, by display name (for CED curves)."""
        return {name: self.nme(m, norm) for m, name in METHODS.items() if self.has(m, norm)}
