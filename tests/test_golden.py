"""Quality must not move: the same seed on CPU gives the same losses as recorded."""
import json

import numpy as np

from tests.golden import GOLDEN, golden_run


def test_same_seed_same_losses_as_recorded(tmp_path):
    expected = json.loads(GOLDEN.read_text())
    got = golden_run(tmp_path)
    np.testing.assert_allclose(got["train_mse"], expected["train_mse"], rtol=1e-4)
    np.testing.assert_allclose(got["val_mse"], expected["val_mse"], rtol=1e-4)
