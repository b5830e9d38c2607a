"""Distillation (train.teacher): a trained run's points fill what a face lacks and are blended
into its labels; a teacher that trained on the student's held-out faces is refused."""
import numpy as np
import pytest
import torch

from lmkit.run import params as P
from lmkit.run.folder import RunFolder
from lmkit.train.devices import DevicePlan
from lmkit.train.distill import Teacher

from tests.conftest import write_300w_faces
from tests.study import steps


class Fixed(torch.nn.Module):
    """A network that predicts the same points for every image and remembers its input's size."""

    def __init__(self, points):
        super().__init__()
        self.points, self.seen = points, None

    def forward(self, x):
        self.seen = x.shape
        return self.points.expand(len(x), -1, -1)


def test_the_teachers_points_fill_the_missing_and_blend_into_the_labelled():
    taught = torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    labels = torch.tensor([[[0.0, 0.0], [float("nan"), float("nan")], [5.0, 5.0]]])  # 3 points, the teacher's 2 first
    net = Fixed(taught[None])
    teacher = Teacher(net, 48, 0.25, DevicePlan.choose("cpu", autocast="none"))
    out = teacher.targets(torch.zeros(1, 3, 32, 32), labels)
    assert net.seen == (1, 3, 48, 48)  # the batch resized to the teacher's input
    assert torch.equal(out[0, 0], torch.tensor([2.5, 5.0]))  # a quarter of the way to the teacher's
    assert torch.equal(out[0, 1], torch.tensor([30.0, 40.0]))  # a missing point: the teacher's
    assert torch.equal(out[0, 2], labels[0, 2])  # a point the teacher does not predict: the label
    assert torch.equal(Teacher(net, 32, 0.0, teacher.plan).targets(torch.zeros(1, 3, 32, 32), labels)[0, 0],
                       labels[0, 0])


@pytest.mark.slow
def test_a_student_learns_from_a_teacher_of_its_own_split_and_never_from_its_held_out_faces(tmp_path):
    data = tmp_path / "data"
    write_300w_faces(data / "trainset", 20, 0)
    write_300w_faces(data / "testset", 4, 100)
    base = {"data.source": "300w", "data.root": str(data), "data.cache_dir": str(tmp_path / "cache"),
            "model.input_size": 32, "model.head": "heatmap", "train.epochs": 2, "train.batch_size": 8,
            "train.autocast": "none", "search.enabled": False, "eval.detector_box": False}

    def train(name, **changes):
        params = P.load(None, {**base, **changes})
        run = RunFolder(tmp_path / name)
        run.root.mkdir()
        P.dump(params, run.params)
        lines = []
        steps.prepare(run, params, log=lines.append)
        steps.hpsearch(run, params, log=lines.append)
        return steps.train(run, params, log=lines.append), lines

    train("teacher", **{"model.input_size": 48})
    best = str(tmp_path / "teacher" / "train" / "best.pt")
    alone, _ = train("alone")
    zero, lines = train("zero", **{"train.teacher": best, "train.teacher_weight": 0.0})
    assert any(f"teacher {best}: 68 points at 48x48" in line for line in lines)
    full, _ = train("full", **{"train.teacher": best, "train.teacher_weight": 1.0})
    # every face has all its points: with weight 0 the targets are the labels, with 1 the teacher's
    assert np.array_equal(zero["train_loss"], alone["train_loss"])
    assert not np.allclose(full["train_loss"], alone["train_loss"])
    # another seed splits the faces differently: the teacher trained on some of its validation faces
    with pytest.raises(ValueError, match=r"train.teacher: .*best.pt trained on \d+ of this run's validation"):
        train("leak", **{"train.teacher": best, "seed": 1})
    with pytest.raises(ValueError, match="is not in a run folder"):
        (tmp_path / "loose.pt").write_bytes((tmp_path / "teacher" / "train" / "best.pt").read_bytes())
        train("loose", **{"train.teacher": str(tmp_path / "loose.pt")})


def test_the_protocol_table_says_a_run_was_distilled():
    from lmkit.report.protocol import compare

    manifest = {"source": "helen", "n_points": 194, "box": "study", "root": "/x/helen194"}
    plain = P.load(None, {"data.source": "helen", "data.root": "/x/helen194"})
    taught = P.merge(plain, {"train.teacher": "/x/reports/big-teacher/train/best.pt", "train.teacher_weight": 0.3})
    plain_row = {r["aspect"]: r for r in compare(plain, manifest, manifest, 560, 140, 170)}["loss, optimiser, schedule"]
    row = {r["aspect"]: r for r in compare(taught, manifest, manifest, 560, 140, 170)}["loss, optimiser, schedule"]
    assert plain_row["same"] and "distilled" not in plain_row["run"]
    assert row["same"] is False and "distilled from big-teacher (its points 0.3 of each target" in row["run"]
