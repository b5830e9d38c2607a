"""The batches of one training epoch: its sample order and random draws, seeded by (seed, epoch)
so that a resumed run repeats an uninterrupted one, and the augmented batches themselves
(``Batches``), gathered in a background thread on a GPU. ``preview_batch`` shows notebooks 01
and 03 the faces as the network sees them."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from lmkit.study.augment import make_batch
from lmkit.study.modelinfo import IMAGENET_MEAN, IMAGENET_STD
from lmkit.study.model import to_tensor


def epoch_generator(seed: int, epoch: int, rank: int | None = None) -> torch.Generator:
    """The generator of one epoch's draws, seeded by (seed, epoch), and by the process's rank
    when training is data-parallel: the one place this seed formula is written."""
    s = seed * 1_000_003 + epoch
    return torch.Generator().manual_seed(s if rank is None else s * 1009 + rank)


def epoch_order(n: int, cfg, epoch: int) -> tuple[torch.Tensor, torch.Generator]:
    """The epoch's sample order (``cfg.epoch_multiplier`` shuffles) and the generator that then
    draws its augmentation, both seeded by (seed, epoch)."""
    g = epoch_generator(cfg.seed, epoch)
    return torch.cat([torch.randperm(n, generator=g) for _ in range(cfg.epoch_multiplier)]), g


def rows(array, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` of a training set as ``place_training_set`` left it, as a tensor."""
    if isinstance(array, torch.Tensor):  # resident: on the GPU, or a shrunk working copy
        return array[idx.to(array.device)]
    return torch.from_numpy(np.ascontiguousarray(array[idx.numpy()]))  # a memory map: read these rows


class Batches:
    """The augmented training batches of one epoch, in ``order``. With ``prefetch`` (the
    default on a GPU) each batch is gathered and augmented in a background thread while the
    previous one trains, so the data path overlaps the model's work. On a CPU the thread only
    competes with the model for the cores, so the CPU default is off (``benchmarks.speed``
    measures both). The batches and their random draws are the same either way."""

    def __init__(self, images, landmarks, order: torch.Tensor, cfg, generator: torch.Generator,
                 device: torch.device, prefetch: bool | None = None, src_size: int | None = None):
        self.images, self.landmarks, self.order, self.src_size = images, landmarks, order, src_size
        self.cfg, self.g, self.device = cfg, generator, device
        self.prefetch = device.type == "cuda" if prefetch is None else prefetch

    def __len__(self) -> int:
        """Batches in the epoch. A last batch of a single image is left out: batch-norm cannot
        train on one image. Orders are reshuffled every epoch, so no image is always left out."""
        full, rest = divmod(len(self.order), self.cfg.batch_size)
        return full + (rest > 1)

    def _make(self, i: int):
        idx = self.order[i * self.cfg.batch_size : (i + 1) * self.cfg.batch_size]
        imgs, pts = rows(self.images, idx), rows(self.landmarks, idx)
        x, y = make_batch(imgs.to(self.device, non_blocking=True), pts.to(self.device, non_blocking=True),
                          self.cfg.input_size, self.cfg.augment, self.g, self.src_size)
        return x, y

    def __iter__(self):
        if not self.prefetch:
            for i in range(len(self)):
                yield self._make(i)
            return
        # on a CPU the worker takes one thread for its ops (a thread-local setting), the model keeps all
        initializer = (lambda: torch.set_num_threads(1)) if self.device.type == "cpu" else None
        with ThreadPoolExecutor(max_workers=1, initializer=initializer) as pool:
            pending = pool.submit(self._make, 0)
            for i in range(len(self)):
                batch = pending.result()
                if i + 1 < len(self):
                    pending = pool.submit(self._make, i + 1)
                yield batch


def preview_batch(images, landmarks, cfg, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faces as the network will see them in training: one augmented draw of each (uint8
    (N, S, S, 3), points in input pixels), for the pictures of notebooks 01 and 03.

    Used in: 01_prepare, "One face, from its box to what the network sees"; 03_train, "Before training: what
    the network is shown"."""
    g = torch.Generator().manual_seed(seed)
    x, y = make_batch(to_tensor(images), to_tensor(landmarks), cfg.input_size, cfg.augment, g)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x * std + mean).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy(), y.numpy()
