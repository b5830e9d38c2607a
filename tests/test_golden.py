"""Quality must not move: the same seed on CPU gives the same losses as recorded."""
import json

import numpy as np

from tests.golden import GOLDEN, golden_run


def test_same_seed_same_losses_as_recorded(tmp_path):
    expected = json.loads(GOLDEN.read_text())
    got = golden_run(tmp_path)
    np.testing.assert_allclose(got["train_mse"], expected["train_mse"], rtol=1e-4)
    np.testing.assert_allclose(got["val_mse"], expected["val_mse"], rtol=1e-4)


def test_prefetching_gives_the_same_batches():
    """The background thread must not change the batches nor their random draws."""
    import torch

    from lmkit.train import Batches, TrainConfig, epoch_order

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (10, 60, 60, 3), dtype=np.uint8)
    landmarks = rng.uniform(10, 50, (10, 5, 2)).astype(np.float32)
    cfg = TrainConfig(batch_size=4, input_size=32, epoch_multiplier=2)
    runs = []
    for prefetch in (True, False):
        order, g = epoch_order(10, cfg, 1)
        runs.append(list(Batches(images, landmarks, order, cfg, g, torch.device("cpu"), prefetch=prefetch)))
    for (xa, ya), (xb, yb) in zip(*runs):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
