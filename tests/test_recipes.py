"""Beyond the study (lmkit.study.recipes): each better recipe's choice falls through to the
student's own function when the params say the study's, and adds to the student's step, never
replaces it."""
from types import SimpleNamespace

import torch

from lmkit.study import losses
from lmkit.study.model import LandmarkRegressor
from lmkit.study.modelinfo import REFERENCE_SIZE
from lmkit.study.recipes import beyond_the_study


class NoStep:
    def zero_grad(self, set_to_none=True):
        pass

    def step(self):
        pass


def student():
    """Study cells as a student may write them; the step calls landmark_loss by name, as 03's does."""
    seen = []
    namespace = {}

    def build_network(n_points, pretrained):
        seen.append("network")
        return LandmarkRegressor(n_points, pretrained)

    def landmark_loss(pred, target, cfg):
        seen.append("loss")
        return (pred - target).abs().mean() * 0 + 7.0

    def train_step(net, optimizer, images, targets, cfg):
        seen.append("step")
        pred = net(images)
        loss = namespace["landmark_loss"](pred, targets, cfg)
        return loss, pred

    namespace["landmark_loss"] = landmark_loss
    return build_network, landmark_loss, train_step, namespace, seen


def cfg(**changes):
    return SimpleNamespace(**({"loss": "mse", "wing": (10.0, 2.0), "heatmap_loss": 0.0} | changes))


def test_the_studys_settings_run_the_students_functions():
    build, loss, step, namespace, seen = student()
    network, recipe_loss, recipe_step = beyond_the_study(build, loss, step)
    namespace["landmark_loss"] = recipe_loss  # what the notebook cell's assignment does
    net = network(5, False)
    value, _ = recipe_step(net, NoStep(), torch.zeros(2, 3, 32, 32), torch.zeros(2, 5, 2), cfg())
    assert float(value) == 7.0 and seen == ["network", "step", "loss"]
    assert network(5, False, "heatmap").head == "heatmap" and seen.count("network") == 1  # a heatmap head: lmkit's


def test_the_regulariser_is_added_to_the_students_step_from_the_same_forward_pass():
    torch.manual_seed(0)
    build, loss, step, namespace, seen = student()
    network, recipe_loss, recipe_step = beyond_the_study(build, loss, step)
    namespace["landmark_loss"] = recipe_loss
    net = network(5, False, "heatmap")
    net.eval()
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 5, 2) * REFERENCE_SIZE
    c = cfg(loss="l1", heatmap_loss=100.0)
    value, pred = recipe_step(net, NoStep(), x, y, c)
    expected_pred, heatmaps = net(x, heatmaps=True)
    expected = losses.landmark_loss("l1", expected_pred, y) + 100.0 * losses.heatmap_divergence(heatmaps, y / REFERENCE_SIZE)
    assert torch.allclose(pred, expected_pred) and torch.allclose(value, expected)
    assert seen == ["step"]  # the student's step ran; the student's mse loss did not (train.loss: l1)


def test_running_the_cell_twice_does_not_wrap_twice():
    build, loss, step, namespace, _ = student()
    once = beyond_the_study(build, loss, step)
    twice = beyond_the_study(*once)
    net = twice[0](5, False, "heatmap")
    net.eval()
    namespace["landmark_loss"] = twice[1]
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 5, 2) * REFERENCE_SIZE
    c = cfg(loss="l1", heatmap_loss=10.0)
    namespace["landmark_loss"] = once[1]
    a, _ = once[2](net, NoStep(), x, y, c)
    namespace["landmark_loss"] = twice[1]
    b, _ = twice[2](net, NoStep(), x, y, c)
    assert torch.allclose(a, b)  # the regulariser added once, not twice
