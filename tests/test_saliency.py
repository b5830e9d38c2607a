import torch
import torch.nn as nn

from lmkit.saliency import input_gradient


class Tiny(nn.Module):
    n_points = 2

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 4)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1)).view(-1, 2, 2)


def test_saliency_equals_finite_difference_gradient():
    torch.manual_seed(0)
    model = Tiny().double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    target = torch.randn(2, 2, 2, dtype=torch.float64)
    grad = input_gradient(model, x, target)

    def loss(inp):  # per-image MSE, summed over the batch
        return ((model(inp) - target) ** 2).flatten(1).mean(1).sum()

    eps = 1e-6
    for idx in [(0, 0, 0, 0), (0, 2, 3, 4), (1, 1, 5, 5), (1, 0, 2, 1)]:
        plus, minus = x.clone(), x.clone()
        plus[idx] += eps
        minus[idx] -= eps
        fd = (loss(plus) - loss(minus)) / (2 * eps)
        assert abs(fd.item() - grad[idx].item()) < 1e-6 * max(1, abs(fd.item()))
    assert grad.abs().sum() > 0
