import pytest
import torch

from lmkit.model import REFERENCE_SIZE, build_model, predict


def test_output_is_k_points_in_reference_pixels():
    model = build_model(7, pretrained=False)
    out = model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 7, 2)
    assert model.backbone.fc.out_features == 14


def test_head_init_starts_at_the_given_shape():
    model = build_model(3, pretrained=False).eval()
    shape = torch.tensor([[10.0, 20.0], [128.0, 128.0], [200.0, 250.0]])
    model.init_head(shape)
    out = model(torch.randn(1, 3, 64, 64))
    torch.testing.assert_close(out[0], shape, atol=5.0, rtol=0)  # random init: ~100 px off


def test_predict_returns_crop_pixels():
    import numpy as np

    model = build_model(2, pretrained=False)
    model.init_head(torch.tensor([[64.0, 128.0], [128.0, 192.0]]))
    model.backbone.fc.weight.data.zero_()
    images = np.zeros((3, 300, 300, 3), np.uint8)
    pred = predict(model, images, 64)
    np.testing.assert_allclose(pred[0], np.array([[64, 128], [128, 192]]) * 300 / REFERENCE_SIZE, rtol=1e-5)


def test_pretrained_without_weights_says_how_to_fix(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"resnet18-.*\.pth.*pretrained: false"):
        build_model(194, pretrained=True)
