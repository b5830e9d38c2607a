"""Self-supervised pretraining (lmkit pretrain): each cell of one view finds the same spot of the
face in the other through the two known warps; the loss learns that; the backbone it writes is
what model.pretrained loads; one that saw a run's held-out faces is refused."""
from pathlib import Path

import pandas as pd
import pytest
import torch

from lmkit.run import params as P
from lmkit.run.folder import RunFolder
from lmkit.study.augment import compose_warps
from lmkit.train.pretrain import dense_nce, matching_cells

from tests.conftest import write_300w_faces
from tests.study import steps


def _warps(offsets, fraction=1.0, size=64):
    offsets = torch.tensor(offsets, dtype=torch.float64)
    return compose_warps(torch.zeros(len(offsets), dtype=torch.float64), offsets, fraction, 96, size)


def test_a_cell_lies_where_the_second_warp_puts_the_same_spot_of_the_face():
    m1, m2 = _warps([[0.0, 0.0]]), _warps([[8.0, -4.0]])  # view 2 cut 8 px right, 4 px up of view 1
    where = matching_cells(m1, m2, 4, 64)
    centres = torch.tensor([[8.0 + 16 * i, 8.0 + 16 * j] for j in range(4) for i in range(4)], dtype=torch.float64)
    assert torch.allclose(where[0], centres - torch.tensor([8.0, -4.0], dtype=torch.float64))
    zoomed = matching_cells(m1, _warps([[0.0, 0.0]], fraction=0.5), 4, 64)  # view 2 the top-left quarter, enlarged
    assert torch.allclose(zoomed[0, 0], torch.tensor([16.0, 16.0], dtype=torch.float64))


def test_the_loss_is_low_only_when_each_cell_finds_its_own_match():
    g = torch.Generator().manual_seed(0)
    z1 = torch.nn.functional.normalize(torch.randn(2, 16, 4, 4, generator=g), dim=1)
    same = matching_cells(_warps([[0.0, 0.0]] * 2), _warps([[0.0, 0.0]] * 2), 4, 64)
    right, hit = dense_nce(z1, z1, same, 64, 0.1, 32, torch.Generator().manual_seed(1))
    assert hit == 1.0
    shuffled = z1.flatten(2)[:, :, torch.randperm(16, generator=g)].reshape(z1.shape)
    wrong, miss = dense_nce(z1, shuffled, same, 64, 0.1, 32, torch.Generator().manual_seed(1))
    assert miss < 0.5 and wrong > right + 1
    # a view 2 moved half off the image: only the cells still inside it are drawn
    moved = matching_cells(_warps([[0.0, 0.0]] * 2), _warps([[32.0, 0.0]] * 2), 4, 64)
    _, hit = dense_nce(z1, z1, moved, 64, 0.1, 32, torch.Generator().manual_seed(1))
    assert hit < 1.0  # each drawn cell now meets another cell's embedding; those whose match fell outside were not drawn


@pytest.mark.slow
def test_pretraining_learns_and_a_run_starts_from_it_unless_it_saw_the_runs_held_out_faces(tmp_path):
    from lmkit.chain.training import check_pretrained, pretrain_run
    from lmkit.data.faces import load_data
    from lmkit.study.model import build_model

    data = tmp_path / "data"
    write_300w_faces(data / "trainset", 36, 0)
    write_300w_faces(data / "testset", 4, 100)
    base = {"data.source": "300w", "data.root": str(data), "data.cache_dir": str(tmp_path / "cache"),
            "model.input_size": 32, "train.batch_size": 8, "train.autocast": "none", "pretrain.epochs": 5, "pretrain.batch_size": 8,
            "pretrain.cells": 64, "pretrain.lr": 3e-3}

    def prepared(name, **changes):
        params = P.load(None, {**base, **changes})
        run = RunFolder(tmp_path / name)
        run.root.mkdir()
        P.dump(params, run.params)
        steps.prepare(run, params, log=lambda m: None)
        return run, params

    run, params = prepared("ssl")
    backbone = pretrain_run(run, params, log=lambda m: None)
    history = pd.read_csv(run.pretrain_history)
    assert list(history["epoch"]) == [1, 2, 3, 4, 5]
    assert history["loss"].iloc[-1] < history["loss"].iloc[0] - 0.3  # it learns to find the spots again
    saved = torch.load(backbone, weights_only=True)
    assert saved["faces"] == len(load_data(run, params).train.images)  # the training faces only
    net = build_model(68, pretrained=str(backbone))
    assert torch.equal(net.backbone.conv1.weight, saved["state_dict"]["conv1.weight"])
    # a run of the same split may start from it; one of another seed holds out faces it trained on
    check_pretrained(P.merge(params, {"model.pretrained": str(backbone)}), load_data(run, params))
    other, theirs = prepared("seed1", seed=1)
    with pytest.raises(ValueError, match=r"model.pretrained: .*backbone.pt trained on \d+ of this run's validation"):
        check_pretrained(P.merge(theirs, {"model.pretrained": str(backbone)}), load_data(other, theirs))


def test_the_protocol_table_says_where_the_weights_came_from():
    from lmkit.report.protocol import compare

    manifest = {"source": "helen", "n_points": 194, "box": "study", "root": "/x/helen194"}
    plain = P.load(None, {"data.source": "helen", "data.root": "/x/helen194"})

    def start(pretrained):
        rows = compare(P.merge(plain, {"model.pretrained": pretrained}), manifest, manifest, 560, 140, 170)
        return {r["aspect"]: r for r in rows}["weights at the start"]["run"]

    assert start("/x/reports/ssl-s0/pretrain/backbone.pt") == "self-supervised on the training faces, no labels (ssl-s0)"
    assert start("/x/weights/resnet18-f37072fd.pth") == "a saved ResNet18 state dict (resnet18-f37072fd.pth)"
    assert start(False).startswith("random")


@pytest.mark.slow
def test_lmkit_pretrain_prepares_the_runs_split_and_says_how_to_start_from_it(tmp_path, capsys):
    from lmkit.cli import main
    from tests.conftest import SMALL

    quick = str(Path(__file__).resolve().parents[1] / "params" / "quick.yaml")
    out = tmp_path / "ssl"
    overrides = [a for kv in SMALL + ["pretrain.epochs=1", "pretrain.batch_size=8", "train.autocast=none"]
                 for a in ("-p", kv)]
    assert main(["pretrain", quick, *overrides, "--out", str(out), "--quiet"]) == 0
    assert f"-p model.pretrained={out / 'pretrain' / 'backbone.pt'}" in capsys.readouterr().out
    assert (out / "split.json").is_file() and len(pd.read_csv(out / "pretrain" / "history.csv")) == 1
    assert main(["pretrain", quick, "-p", "pretrain.epochs=0", "--out", str(out)]) == 1
    assert "pretrain.epochs" in capsys.readouterr().err
