"""On the real 300-W files in ../shared/data, when they are there (skipped otherwise)."""
from pathlib import Path

import numpy as np
import pytest

from lmkit.readers import read_300w, read_300w_folder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "helen68" / "testset").is_dir(), reason=f"real data not found at {DATA}")


@needs_data
def test_read_real_300w_testset():
    samples = list(read_300w(DATA / "helen68", "test"))
    assert len(samples) == 170
    for s in samples[:20]:
        h, w, c = s.image.shape
        assert c == 3 and s.landmarks.shape == (68, 2)
        assert (s.landmarks >= -5).all() and (s.landmarks[:, 0] <= w + 5).all() and (s.landmarks[:, 1] <= h + 5).all()


@needs_data
def test_read_real_afw_folder_without_split_folders():
    first = next(read_300w_folder(DATA / "afw68"))
    assert first.landmarks.shape == (68, 2) and first.image.ndim == 3


@needs_data
def test_dlib_peer_on_a_real_face():
    pytest.importorskip("dlib", reason="dlib not installed (pip install -e '.[peers]')")
    from lmkit.peers import peer_unavailable, run_dlib
    from lmkit.prepare import crop_and_resize, crop_box

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
        assert np.linalg.norm(pred - true, axis=1).mean() / iod < 0.15, kind  # a real detection, in the crop frame
        assert out[kind]["seconds_per_face"] > 0
    assert peer_unavailable(194) and "68 points" in peer_unavailable(194)
