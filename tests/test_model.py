import pytest
import torch

from lmkit.study.model import build_model, predict
from lmkit.study.modelinfo import REFERENCE_SIZE


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
    np.testing.assert_allclose(
        pred[0], np.array([[64, 128], [128, 192]]) * 300 / REFERENCE_SIZE, rtol=1e-5
    )


def test_pretrained_without_weights_says_how_to_fix(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"resnet18-.*\.pth.*pretrained: false"):
        build_model(194, pretrained=True)


def test_soft_argmax_finds_a_peaked_heatmap_and_reaches_past_the_edges():
    from lmkit.study.model import HEATMAP_REACH, soft_argmax

    h = torch.full((1, 3, 8, 10), -50.0)
    h[0, 0, 2, 7] = 50.0  # one cell: its centre
    h[0, 1, 0, 0] = 50.0  # the top-left cell: beyond the crop's corner
    h[0, 2, :, :] = 0.0  # flat: the centre of the crop
    xy = soft_argmax(h)[0]
    span = 1 + 2 * HEATMAP_REACH
    torch.testing.assert_close(
        xy[0], torch.tensor([7.5 / 10 * span - HEATMAP_REACH, 2.5 / 8 * span - HEATMAP_REACH])
    )
    assert (xy[1] < 0).all()  # a point on the crop's very edge is inside the softmax's reach
    torch.testing.assert_close(xy[2], torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("head, cells", [("heatmap", 8), ("heatmap-s4", 16)])
def test_the_heatmap_head_outputs_coordinates_and_round_trips_through_the_model_file(
    tmp_path, head, cells
):
    import numpy as np

    from lmkit.use.export import export
    from lmkit.study.model import load_model_file, save_model_file
    from lmkit.study.modelinfo import ModelInfo

    model = build_model(5, pretrained=False, head=head).eval()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 5, 2) and not hasattr(model.backbone.fc, "weight")
    points, logits = model(x, heatmaps=True)
    assert logits.shape == (2, 5, cells, cells)  # stride 8 or 4 of the 64-pixel input
    torch.testing.assert_close(points, out)
    assert ((out > -0.2 * REFERENCE_SIZE) & (out < 1.2 * REFERENCE_SIZE)).all()
    info = ModelInfo(
        scheme="test",
        n_points=5,
        input_size=64,
        crop_size=100,
        forehead=1 / 3,
        padding=0.05,
        mean_shape=[[50.0, 50.0]] * 5,
        dataset="none",
        head=head,
    )
    path = save_model_file(model, info, tmp_path / "model.pt")
    again, info2 = load_model_file(path)
    assert info2.head == head
    torch.testing.assert_close(again(x), out)
    onnx = pytest.importorskip("onnxruntime")
    export(path, "onnx", tmp_path / "m.onnx")
    crops = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    got = onnx.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"crops": crops})[0]
    from lmkit.study.model import predict

    np.testing.assert_allclose(got, predict(again, crops, 64), atol=1e-2)


def test_a_heatmap_head_cannot_start_at_the_mean_shape():
    from lmkit.run import params as P

    with pytest.raises(
        P.ParamsError, match="model.head_init: mean_shape starts the regression head only"
    ):
        P.load(None, {"model.head": "heatmap", "model.head_init": "mean_shape"})
    with pytest.raises(ValueError, match="regression head only"):
        build_model(3, pretrained=False, head="heatmap").init_head(torch.zeros(3, 2))


def _features(model, x):
    """Every map the heads read: layer 4 (regression) and the heatmaps."""
    b = model.backbone
    c1 = b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(x)))))
    c2 = b.layer2(c1)
    c3 = b.layer3(c2)
    c4 = b.layer4(c3)
    return c4, model.heatmaps(c1, c2, c3, c4)


@pytest.mark.parametrize(
    "size, symmetric, head",
    [
        (96, False, "heatmap"),
        (97, True, "heatmap"),
        (65, True, "heatmap"),
        (96, False, "heatmap-s4"),
        (97, True, "heatmap-s4"),
    ],
)
def test_resnet18_is_mirror_symmetric_only_at_32k_plus_1_pixels(size, symmetric, head):
    """With mirror-symmetric kernels, the maps of a mirrored image are the mirrored maps only
    when every stride-2 layer samples a grid symmetric about the centre: an odd size at each of
    the five, i.e. an input of 32k + 1. At 96 the grid leans to the top left, and a model trained
    with flips learns the average of two placements (the constant x shift; README)."""
    torch.manual_seed(0)
    model = build_model(5, pretrained=False, head=head).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)
        x = torch.rand(1, 3, size, size)
        for plain, mirrored in zip(_features(model, x), _features(model, x.flip(-1))):
            gap = float((mirrored - plain.flip(-1)).abs().max())
            assert (gap < 1e-4) == symmetric, gap


def test_bfloat16_on_a_cpu_without_it_is_flagged(tmp_path):
    from lmkit.study.model import cpu_has_bf16
    from lmkit.train.config import DevicePlan

    (tmp_path / "avx2").write_text("flags\t\t: fpu sse avx2 avx512f\n")
    (tmp_path / "bf16").write_text("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert not cpu_has_bf16(str(tmp_path / "avx2")) and cpu_has_bf16(str(tmp_path / "bf16"))
    assert not cpu_has_bf16(str(tmp_path / "missing"))
    forced = DevicePlan.choose("cpu", autocast="bfloat16").describe()
    assert ("warning" in forced) == (not cpu_has_bf16())


@pytest.mark.parametrize("native", [True, False])
def test_auto_picks_bfloat16_on_a_cpu_that_computes_it_and_says_so(monkeypatch, native):
    from lmkit.study import model
    from lmkit.train.config import DevicePlan

    monkeypatch.setattr(model, "cpu_has_bf16", lambda: native)
    plan = DevicePlan.choose("cpu")
    assert plan.autocast == ("bfloat16" if native else "none")
    assert "autocast " + plan.autocast in plan.describe()
    assert DevicePlan.choose("cpu", autocast="none").autocast == "none"  # float32 when asked


def test_a_saved_resnet18_state_dict_is_the_backbones_start(tmp_path):
    """model.pretrained: PATH loads a torchvision ResNet18 state dict (its fc left out) into the
    backbone of either head; a file of another network is refused, naming the file and keys."""
    import torchvision

    from lmkit.study.model import LandmarkRegressor, load_backbone

    torch.manual_seed(3)
    donor = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(donor.state_dict(), path)
    for head in ("regression", "heatmap"):
        net = LandmarkRegressor(5, str(path), head)
        assert torch.equal(net.backbone.layer3[0].conv1.weight, donor.layer3[0].conv1.weight)
        assert torch.equal(net.backbone.bn1.running_var, donor.bn1.running_var)
    wrapped = (
        tmp_path / "wrapped.pt"
    )  # a pretraining stage's file: {"state_dict": {"backbone.<key>": ...}}
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in donor.state_dict().items()}}, wrapped)
    assert torch.equal(
        load_backbone(torchvision.models.resnet18(weights=None), wrapped).conv1.weight,
        donor.conv1.weight,
    )
    other = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), other)
    with pytest.raises(
        RuntimeError,
        match=r"resnet34\.pth: not a torchvision ResNet18 state dict: not in ResNet18: layer1\.2",
    ):
        LandmarkRegressor(5, str(other))
    with pytest.raises(FileNotFoundError, match="model.pretrained: .*nowhere.pth: no such file"):
        LandmarkRegressor(5, str(tmp_path / "nowhere.pth"))
