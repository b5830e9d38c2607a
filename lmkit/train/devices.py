"""Where and how training runs on its device: the device plan and the training set's place.

Each choice is a params key whose ``auto`` is what lmkit picks for the device; each can be
forced, so the GPU path (resident set, prefetch thread, bfloat16) also runs, and is tested, on
a CPU:

    train.resident       the training set as one uint8 tensor on the device
                         (auto: on CUDA; on the CPU a memory map, or a shrunk working copy)
    train.prefetch       batches gathered and augmented in a background thread (auto: on CUDA)
    train.autocast       none, bfloat16, or float16 with a gradient scaler (auto: bfloat16 on CUDA
                         and on a CPU that computes it natively (AVX-512 BF16 or AMX: 1.5x the
                         images per second of float32 on a 2-core AVX-512 host, the same accuracy);
                         none on other CPUs, where bfloat16 is emulated and was 12x slower)
    train.channels_last  NHWC memory layout for model and batches (auto: on)

The weights stay float32 under autocast, so checkpoints resume with any plan. What only a
GPU has (cuDNN autotuning, NCCL) is in the two small functions at the end.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lmkit.study.augment import preshrunk
from lmkit.run.progress import emit, quiet
from lmkit.study.model import to_tensor

AUTOCAST = {"none": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class DevicePlan:
    device: torch.device
    resident: bool
    prefetch: bool
    autocast: str
    channels_last: bool

    @classmethod
    def choose(cls, device, resident="auto", prefetch="auto", autocast="auto", channels_last="auto") -> "DevicePlan":
        device = torch.device(device)
        cuda = device.type == "cuda"
        if autocast not in ("auto", *AUTOCAST):
            raise ValueError(f"train.autocast: auto, {', '.join(AUTOCAST)}; got {autocast!r}")

        def pick(value, auto: bool) -> bool:
            return auto if value == "auto" else bool(value)

        native = cuda or (device.type == "cpu" and cpu_has_bf16())
        return cls(device, pick(resident, cuda), pick(prefetch, cuda),
                   ("bfloat16" if native else "none") if autocast == "auto" else autocast, pick(channels_last, True))

    def autocast_context(self):
        dtype = AUTOCAST[self.autocast]
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def grad_scaler(self):
        """float16 needs its gradients scaled (they underflow); bfloat16 and float32 do not."""
        return torch.amp.GradScaler(self.device.type) if self.autocast == "float16" else None

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def describe(self) -> str:
        where = "resident on the device" if self.resident else "read from memory"
        text = (f"{self.device}: training set {where}, prefetch {'on' if self.prefetch else 'off'}, "
                f"autocast {self.autocast}, channels_last {'on' if self.channels_last else 'off'}")
        if self.device.type == "cpu" and self.autocast == "bfloat16" and cpu_has_bf16():
            text += " (this CPU computes bfloat16 natively; train.autocast: none trains in float32)"
        elif self.device.type == "cpu" and self.autocast == "bfloat16" and not cpu_has_bf16():
            text += (" (warning: this CPU has no native bfloat16 (AVX-512 BF16 or AMX); emulated bfloat16 "
                     "trained 12x slower than float32 on an AVX2 CPU: train.autocast: none)")
        return text


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bfloat16 natively (the avx512_bf16 or amx_bf16 flag; Linux)."""
    try:
        flags = set(open(cpuinfo).read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def place_training_set(images, landmarks, input_size: int, plan: DevicePlan):
    """The training images and landmarks where the plan keeps them. Crops much larger than the
    input are shrunk once (as every batch would shrink them); with ``plan.resident`` both go to
    the device as tensors (uint8 images), else the images stay a memory map or working copy."""
    working = preshrunk(images, input_size)
    images = images if working is None else working
    if plan.resident:
        images = images if isinstance(images, torch.Tensor) else to_tensor(images)
        return images.to(plan.device), to_tensor(landmarks).to(plan.device)
    return images, landmarks


def cuda_switches(device) -> None:
    """Process-wide switches for a CUDA device: cuDNN autotuning (the batch shape is fixed).
    Called by the entry points (the training step, the benchmarks), never on a CPU."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


def process_group_backend(cuda: bool) -> str:
    """NCCL between GPUs, gloo on CPUs."""
    return "nccl" if cuda else "gloo"


class TrainingNetwork(torch.nn.Module):
    """What a training step calls as ``net``: the model in the device plan's memory layout, its
    forward under the plan's autocast with float32 outputs, and, with float16, the gradients that
    flow back from its outputs scaled by the gradient scaler (what ``GradScaler.scale(loss)``
    does), so that a step written as plain ``loss.backward(); optimizer.step()`` is right on
    every plan. ``optimizer.step()`` then unscales, and skips a step whose gradients overflowed."""

    def __init__(self, net, plan: DevicePlan, scaler=None):
        super().__init__()
        self.net, self.plan, self.scaler = net, plan, scaler

    def forward(self, x: torch.Tensor, **kwargs):
        with self.plan.autocast_context():
            out = self.net(self.plan.layout(x), **kwargs)
        out = tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()
        if self.scaler is not None and torch.is_grad_enabled():
            scale = self.scaler.get_scale()
            for o in out if isinstance(out, tuple) else (out,):
                if o.requires_grad:
                    o.register_hook(lambda g: g * scale)
        return out


class ScaledOptimizer:
    """The optimizer a step sees under float16: ``step`` goes through the gradient scaler
    (unscale, skip a step whose gradients overflowed, adjust the scale)."""

    def __init__(self, opt, scaler, device):
        self.opt, self.scaler = opt, scaler
        scaler.scale(torch.ones((), device=device))  # the scaler makes its scale on its first use

    def zero_grad(self, set_to_none: bool = True):
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self):
        self.scaler.step(self.opt)
        self.scaler.update()

    @property
    def param_groups(self):
        return self.opt.param_groups


def training_network(model, cfg, plan: DevicePlan, world: int = 1, log=quiet):
    """The network the steps run: the model in the plan's memory layout, wrapped in
    DistributedDataParallel when there are several processes (see ``fit``), compiled when
    asked. Returns it and the per-process config (``cfg``, a ``TrainConfig``, with its share of
    the batch)."""
    if not plan.channels_last:
        model.to(memory_format=torch.contiguous_format)
    net, step_cfg = model, cfg
    if world > 1:
        from dataclasses import replace

        from torch.nn.parallel import DistributedDataParallel

        device = torch.device(cfg.device)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        step_cfg = replace(cfg, batch_size=cfg.batch_size // world)
        emit(log, "launch", f"data-parallel: world size {world}, {step_cfg.batch_size} of every {cfg.batch_size} images per process")
    if cfg.compile:
        net = torch.compile(net)
    return net, step_cfg
