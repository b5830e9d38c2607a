"""One training run's settings (``TrainConfig``, from the params), where it runs (``DevicePlan``)
and the fresh network it starts from (``new_model``). Read by notebook 03's training cell, notebook
02's search and the ablation; ``lmkit.train.loop.fit`` runs them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from lmkit.data.faces import check_flips
from lmkit.run.folder import read_json
from lmkit.run.params import DEFAULTS, Params, System, Train
from lmkit.study.augment import Augment, frozen
from lmkit.study.model import PRECISIONS, cpu_has_bf16, pick_device, training_precision
from lmkit.study.modelinfo import REFERENCE_SIZE, view_fraction

_T, _S = DEFAULTS.train, DEFAULTS.system


@dataclass(frozen=True)
class DevicePlan:
    """Where and how training runs. Each field is a params key whose ``auto`` is lmkit's choice
    for the device; each can be forced, so the GPU path also runs, and is tested, on a CPU:

    resident       the training set as one tensor on the device (auto: on CUDA, when it fits)
    prefetch       the next batch made in a background thread (auto: on CUDA)
    autocast       none, bfloat16, or float16 with a gradient scaler (auto: ``training_precision``:
                   bfloat16 where the device computes it natively, float16 on CUDA cards older
                   than compute capability 8.0, float32 elsewhere)
    channels_last  NHWC memory layout of model and batches (auto: on)

    The weights stay float32 under autocast, so checkpoints resume with any plan."""

    device: torch.device
    resident: bool
    prefetch: bool
    autocast: str
    channels_last: bool

    @classmethod
    def choose(
        cls, device, resident="auto", prefetch="auto", autocast="auto", channels_last="auto"
    ) -> DevicePlan:
        device = torch.device(device)
        cuda = device.type == "cuda"
        if autocast not in ("auto", *PRECISIONS):
            raise ValueError(f"system.autocast: auto, {', '.join(PRECISIONS)}; got {autocast!r}")

        def pick(value, auto: bool) -> bool:
            return auto if value == "auto" else bool(value)

        precision = training_precision(device) if autocast == "auto" else autocast
        return cls(
            device, pick(resident, cuda), pick(prefetch, cuda), precision, pick(channels_last, True)
        )

    def autocast_context(self):
        """The forward pass's mixed precision (a no-op in float32)."""
        dtype = PRECISIONS[self.autocast]
        return torch.autocast(
            self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None
        )

    def grad_scaler(self) -> torch.amp.GradScaler:
        """float16's gradients underflow unless the loss is scaled; with bfloat16 or float32 the
        scaler is disabled and each of its calls does nothing but the plain step."""
        return torch.amp.GradScaler(self.device.type, enabled=self.autocast == "float16")

    def describe(self) -> str:
        where = "resident on the device" if self.resident else "read from memory"
        text = (
            f"{self.device}: training set {where}, prefetch {'on' if self.prefetch else 'off'}, "
            f"autocast {self.autocast}, channels_last {'on' if self.channels_last else 'off'}"
        )
        if self.device.type == "cpu" and self.autocast == "bfloat16" and not cpu_has_bf16():
            text += (
                " (warning: this CPU has no native bfloat16 (AVX-512 BF16 or AMX); "
                "emulated bfloat16 "
                "trained 12x slower than float32 on an AVX2 CPU: system.autocast: none)"
            )
        return text


def cuda_switches(device) -> None:
    """Process-wide switches for a CUDA device: cuDNN autotuning (the batch shape is fixed)."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


@dataclass
class TrainConfig:
    """One training run's settings; the defaults are the params schema's (``lmkit.run.params``).

    Used in: 01_prepare, "One face, from its box to what the network sees"; 02_hpsearch, "The objective";
    03_train, "Before training: what the network is shown"."""

    epochs: int = _T.epochs
    batch_size: int = _T.batch_size
    lr: float = _T.lr
    weight_decay: float = _T.weight_decay
    epoch_multiplier: int = _T.epoch_multiplier
    input_size: int = DEFAULTS.model.input_size
    val_view: float = (
        1.0  # validation sees the centred square of this fraction of each crop (model.view)
    )
    augment: Augment = field(default_factory=Augment)
    study_validation: bool = (
        False  # data.split: paper (the study's protocol): validation = augmented training copies
    )
    keep_last: bool = (
        False  # data.final: the last epoch's weights are best.pt (nothing held out to choose by)
    )
    keep_checkpoints: bool = (
        _T.keep_checkpoints
    )  # after training, keep last.pt (to resume with more epochs)
    seed: int = 0
    device: str = "cpu"
    loss: str = _T.loss
    wing: tuple[float, float] = tuple(_T.wing)
    heatmap_loss: float = (
        _T.heatmap_loss
    )  # weight of the heatmaps' divergence from a Gaussian (losses)
    schedule: str = _T.schedule
    warmup: int = _T.warmup  # epochs of linear warm-up
    optimizer: str = _T.optimizer
    compile: bool = _S.compile  # torch.compile the model (worth it on a GPU for long runs)
    resident: str | bool = _S.resident  # the device plan (DevicePlan): "auto" is lmkit's choice
    prefetch: str | bool = _S.prefetch
    autocast: str = _S.autocast
    channels_last: str | bool = _S.channels_last

    @classmethod
    def from_params(cls, p: Params, device, mirror: tuple[int, ...] = (), **changes) -> TrainConfig:
        """From the params: each field named as a ``train`` or ``system`` key is that key; the rest
        come from the model, data and seed. ``changes`` replace fields (a search trial's lr and
        budget)."""
        t = p.train
        named = {  # a replaced field is not read (a run's record)
            f.name: frozen(getattr(section, f.name))
            for f in fields(cls)
            for section, schema in ((t, Train), (p.system, System))
            if f.name in schema.model_fields and f.name != "device" and f.name not in changes
        }
        cfg = cls(
            **named,
            input_size=p.model.input_size,
            augment=Augment.from_train(t, mirror),
            val_view=view_fraction(p.model.view, t.crop_fraction, t.scale),
            study_validation=p.data.split == "paper",
            keep_last=p.data.final,
            seed=p.seed,
            device=str(device),
        )
        return replace(cfg, **changes)

    @classmethod
    def for_run(cls, run, params: Params, d, faces) -> TrainConfig:
        """A run's training settings: the params, the learning rate and weight decay notebook 02
        chose (``search/best_hparams.json``), the device ``system.device`` names, the mirror map of
        ``faces`` (``d.training()``) once it is checked on the data (``d``, the run's faces).

        Used in: 03_train, "Training"."""
        k = d.scheme.n_points
        check_flips(params, d.scheme, faces.mean[:k])
        if d.joint is not None:
            check_flips(params, d.joint_scheme, faces.mean[k:])
        hp = read_json(run.best_hparams, "02_hpsearch")
        return cls.from_params(
            params,
            pick_device(params.system.device),
            faces.mirror,
            lr=hp["lr"],
            weight_decay=hp["weight_decay"],
        )

    def describe(self) -> str:
        """The recipe in one line, for the training's log."""
        return (f"loss {self.loss}, {self.optimizer}, schedule {self.schedule} "
                f"(warm-up {self.warmup}), lr {self.lr:.2e}, weight decay {self.weight_decay:.2e}, "
                f"{self.input_size}x{self.input_size}")  # fmt: skip

    def plan(self) -> DevicePlan:
        """The device plan, chosen once per setting (every training step asks for it)."""
        key = (self.device, self.resident, self.prefetch, self.autocast, self.channels_last)
        if getattr(self, "_plan", (None,))[0] != key:
            self._plan = (key, DevicePlan.choose(*key))
        return self._plan[1]

    def mixed_precision(self):
        """The forward pass's mixed precision, as the plan chose it (a no-op in float32).

        Used in: 03_train, "One training step"."""
        return self.plan().autocast_context()

    def lr_at(self, epoch: int) -> float:
        """The learning rate of an epoch (1-based): after ``warmup`` epochs rising linearly to
        ``lr``, constant, cosine to zero, or x0.1 at 50% and 75% of the epochs after warm-up."""
        if epoch <= self.warmup:
            return self.lr * epoch / (self.warmup + 1)
        e, n = epoch - self.warmup, self.epochs - self.warmup
        if self.schedule == "none":
            return self.lr
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * (e - 1) / n))
        if self.schedule == "step":
            return self.lr * 0.1 ** sum(e > m * n for m in (0.5, 0.75))
        raise ValueError(f"train.schedule: unknown schedule {self.schedule!r} (none, cosine, step)")


def new_model(
    build,
    n_points: int,
    mean_shape: np.ndarray | None,
    seed: int,
    device,
    pretrained: bool | str = DEFAULTS.model.pretrained,
    head_init: str = DEFAULTS.model.head_init,
    crop_size: int = DEFAULTS.data.crop_size,
):
    """A freshly initialised network from ``build(n_points, pretrained)`` (notebook 03's
    ``build_network``), seeded; the head starts at the mean shape when ``head_init`` is
    ``mean_shape`` (``mean_shape`` in pixels of ``crop_size`` crops). torchvision draws the initial
    weights from torch's global generator: it is seeded inside ``fork_rng``, so the caller's
    random state is left as it was.

    Used in: 02_hpsearch, "The objective"; 03_train, "Training"."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(n_points, pretrained).to(memory_format=torch.channels_last)
    if head_init == "mean_shape":
        model.init_head(
            torch.as_tensor(mean_shape * (REFERENCE_SIZE / crop_size), dtype=torch.float32)
        )
    return model.to(device)


def model_options(params: Params) -> dict:
    """``new_model``'s options from a run's params.

    Used in: 02_hpsearch, "The objective"; 03_train, "Training"."""
    return {
        "pretrained": params.model.pretrained,
        "head_init": params.model.head_init,
        "crop_size": params.data.crop_size,
    }
