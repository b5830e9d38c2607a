import math

import pytest
import torch

from lmkit.losses import landmark_loss, wing_loss


def test_wing_loss_against_hand_computed_values():
    w, eps = 10.0, 2.0
    c = w - w * math.log(1 + w / eps)  # 10 - 10 ln 6 = -7.9176
    target = torch.zeros(1, 3, 2)
    pred = torch.tensor([[[1.0, 0.0], [-4.0, 0.0], [15.0, 0.0]]])
    # per coordinate: 10 ln 1.5, 10 ln 3, 15 - c; zeros elsewhere; mean over 6 values
    expected = (10 * math.log(1.5) + 10 * math.log(3) + 15 - c) / 6
    assert wing_loss(pred, target, w, eps).item() == pytest.approx(expected, rel=1e-6)
    assert 15 - c == pytest.approx(22.9176, abs=1e-4)


def test_wing_loss_is_continuous_at_the_width():
    t = torch.zeros(1)
    below, above = wing_loss(torch.tensor([9.9999]), t), wing_loss(torch.tensor([10.0001]), t)
    assert below.item() == pytest.approx(above.item(), abs=1e-3)


def test_mse_and_l1_and_unknown():
    p, t = torch.tensor([[3.0, -1.0]]), torch.zeros(1, 2)
    assert landmark_loss("mse", p, t).item() == pytest.approx(5.0)
    assert landmark_loss("l1", p, t).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="train.loss: unknown loss 'huber'"):
        landmark_loss("huber", p, t)
