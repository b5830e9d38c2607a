"""On the real 300-W files in ../shared/data, when they are there (skipped otherwise)."""

from pathlib import Path

import numpy as np
import pytest

from lmkit.data.readers import read_300w, read_300w_folder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(
    not (DATA / "helen68" / "testset").is_dir(), reason=f"real data not found at {DATA}"
)


@needs_data
def test_read_real_300w_testset():
    samples = list(read_300w(DATA / "helen68", "test"))
    assert len(samples) == 170
    for s in samples[:20]:
        h, w, c = s.image.shape
        assert c == 3 and s.landmarks.shape == (68, 2)
        assert (
            (s.landmarks >= -5).all()
            and (s.landmarks[:, 0] <= w + 5).all()
            and (s.landmarks[:, 1] <= h + 5).all()
        )


@needs_data
def test_read_real_afw_folder_without_split_folders():
    first = next(read_300w_folder(DATA / "afw68"))
    assert first.landmarks.shape == (68, 2) and first.image.ndim == 3


@needs_data
def test_dlib_peer_on_a_real_face():
    pytest.importorskip("dlib", reason="dlib not installed (pip install -e '.[peers]')")
    from lmkit.use.peers import peer_unavailable, run_dlib
    from lmkit.data.prepare import crop_and_resize, crop_box

    if peer_unavailable(68):
        pytest.skip(peer_unavailable(68))
    s = next(read_300w(DATA / "helen68", "test"))
    box = crop_box(s.landmarks, s.image.shape[:2])
    _, true = crop_and_resize(s.image, s.landmarks, box, 300)
    out = run_dlib([s.source], np.array([box]), true[None], 300)
    for kind in ("hog", "annotation"):
        pred = out[kind]["pred"][0]
        assert np.isfinite(pred).all(), kind
        iod = np.linalg.norm(true[36:42].mean(0) - true[42:48].mean(0))
        assert np.linalg.norm(pred - true, axis=1).mean() / iod < 0.15, (
            kind
        )  # a real detection, in the crop frame
        assert out[kind]["seconds_per_face"] > 0
    assert peer_unavailable(194) and "68 points" in peer_unavailable(194)


needs_helen194 = pytest.mark.skipif(
    not (DATA / "helen194" / "annotation").is_dir(),
    reason=f"Helen's 194-point annotations not found at {DATA / 'helen194'}",
)


@needs_helen194
def test_the_helen194_scheme_fits_the_real_release():
    """The groups, outer eye corners and mirror map, derived from the real annotations, still fit
    them: the worst mirrored pair lands within 0.09 inter-ocular distances (0.061 measured, the
    brows' outer ends, in the study's crop)."""
    from lmkit.study import metrics
    from lmkit.data.prepare import write_cache
    from lmkit.data.readers import entries_helen, helen_inventory
    from lmkit.study.schemes import HELEN194, mirror_errors

    entries = entries_helen(DATA / "helen194", "train")[:300]
    cache = write_cache(
        entries,
        Path(__import__("tempfile").mkdtemp()) / "c",
        {"source": "helen"},
        padding=5,
        box="study",
    )
    mean = metrics.mean_shape(cache.landmarks)
    err = mirror_errors(HELEN194, mean, 300)
    assert err.max() < 0.09
    a, b = HELEN194.group("eye_a").indices, HELEN194.group("eye_b").indices
    assert mean[a, 0].mean() > mean[b, 0].mean()  # the eye on the image's right first
    assert HELEN194.outer_eye_corners == (
        b[int(np.argmin(mean[b, 0]))],
        a[int(np.argmax(mean[a, 0]))],
    )
    jaw = HELEN194.group("jaw").indices
    assert mean[jaw[0], 0] < mean[jaw[-1], 0] and mean[jaw, 1].argmax() in range(
        15, 26
    )  # left to right via the chin
    assert helen_inventory(DATA / "helen194")["train"] == {"listed": 700, "used": 700, "missing": 0}
