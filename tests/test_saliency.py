import torch
import torch.nn as nn

from lmkit.study.cells import study


class Tiny(nn.Module):
    n_points = 2

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 4)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1)).view(-1, 2, 2)


def test_notebook_05s_saliency_equals_the_finite_difference_gradient():
    """05's saliency cell (dL/dI, the largest |gradient| over colour channels) against finite differences."""
    torch.manual_seed(0)
    model = Tiny().double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    target = torch.randn(2, 2, 2, dtype=torch.float64)
    sal = study("05_figures").saliency(model, x, target)

    def loss(inp):  # per-image MSE, summed over the batch
        return ((model(inp) - target) ** 2).flatten(1).mean(1).sum()

    eps = 1e-6
    for i, h, w in [(0, 0, 0), (0, 3, 4), (1, 5, 5), (1, 2, 1)]:
        fd = []
        for c in range(3):
            plus, minus = x.clone(), x.clone()
            plus[i, c, h, w] += eps
            minus[i, c, h, w] -= eps
            fd.append(abs((loss(plus) - loss(minus)).item() / (2 * eps)))
        assert abs(max(fd) - sal[i, h, w].item()) < 1e-6 * max(1, max(fd))
    assert sal.shape == (2, 6, 6) and sal.sum() > 0
