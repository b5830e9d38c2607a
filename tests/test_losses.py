import math

import pytest
import torch

from lmkit.study.losses import landmark_loss, wing_loss


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


def test_the_heatmap_divergence_is_zero_on_the_target_gaussian_and_grows_away_from_it():
    from lmkit.study.losses import heatmap_divergence
    from lmkit.study.model import cell_centres

    cells = 12
    c = cell_centres(cells, torch.zeros(1))
    step = float(c[1] - c[0])
    target = torch.tensor(
        [[[float(c[4]), float(c[7])]]]
    )  # x on column 4, y on row 7, fractions of the input
    gauss = -0.5 * (
        ((c.view(1, -1) - target[0, 0, 0]) / step) ** 2
        + ((c.view(-1, 1) - target[0, 0, 1]) / step) ** 2
    )
    on = heatmap_divergence(gauss.view(1, 1, cells, cells), target * 256)
    assert float(on) < 1e-6
    off = [
        float(
            heatmap_divergence(torch.roll(gauss, k, dims=1).view(1, 1, cells, cells), target * 256)
        )
        for k in (1, 2, 4)
    ]
    flat = float(heatmap_divergence(torch.zeros(1, 1, cells, cells), target * 256))
    assert 0 < off[0] < off[1] < off[2] <= math.log(2) and 0 < flat < math.log(2)
    # its gradient moves a flat heatmap's mass toward the target cell
    logits = torch.zeros(1, 1, cells, cells, requires_grad=True)
    heatmap_divergence(logits, target * 256).backward()
    assert logits.grad[0, 0].argmin() == 7 * cells + 4


def test_the_heatmap_loss_needs_a_heatmap_head():
    from lmkit.run import params as P

    with pytest.raises(
        P.ParamsError, match="train.heatmap_loss: the regression head has no heatmaps"
    ):
        P.load(None, {"train.heatmap_loss": 10.0})
    assert (
        P.load(None, {"train.heatmap_loss": 10.0, "model.head": "heatmap-s4"}).train.heatmap_loss
        == 10.0
    )
