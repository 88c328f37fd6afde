"""The prepared dataset: uint8 N×C×H×W arrays per split plus a meta.json.

This is the contract between prepare_data and every later stage. Whole splits are held as
one uint8 tensor and batched by index (no per-sample DataLoader work): on a 2-core CPU that
is several times faster than a DataLoader, and it makes each step's batch a pure function
of (seed, step) — which is what lets a resumed run reproduce an uninterrupted one exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from gandistill.distributed import World, shard
from gandistill.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")  # every prepared dataset has exactly these (test only for reporting)
# Cross-domain transfer: the target domain's splits + meta.json, inside the source dataset's folder.
TARGET_DIR = "target"


@dataclass
class Split:
    x: np.ndarray  # uint8, N×C×H×W
    y: np.ndarray  # int64, N

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DatasetMeta:
    class_names: list[str]
    channels: int
    height: int
    width: int
    mean: list[float]  # per channel, on [0, 1] pixels of the train split
    std: list[float]
    source: str
    version: dict[str, str] = field(default_factory=dict)  # file -> checksum, DVC md5, git rev
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of uint8 images on the [0, 1] scale (computed in float64 chunks)."""
    c = x.shape[1]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    count = 0
    for start in range(0, len(x), 8192):
        chunk = x[start : start + 8192].astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 2, 3))
        total_sq += (chunk**2).sum(axis=(0, 2, 3))
        count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return mean.tolist(), std.tolist()


def save_dataset(folder: str | Path, splits: dict[str, Split], meta: DatasetMeta) -> None:
    if sorted(splits) != sorted(SPLITS):  # every later stage loads all three by these names
        raise ValueError(f"a prepared dataset has the splits {', '.join(SPLITS)}; got {', '.join(splits)}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        np.savez(out / f"{name}.npz", x=split.x, y=split.y)
    meta.counts = {name: len(split) for name, split in splits.items()}
    (out / "meta.json").write_text(json.dumps(asdict(meta), indent=2))


def load_meta(folder: str | Path) -> DatasetMeta:
    file = Path(folder) / "meta.json"
    if not file.is_file():
        raise DataError(f"{file} not found: {folder} is not a prepared dataset (run the prepare_data stage)")
    return DatasetMeta(**json.loads(file.read_text()))


def load_split(folder: str | Path, name: str) -> Split:
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; a prepared dataset has {', '.join(SPLITS)}")
    file = Path(folder) / f"{name}.npz"
    if not file.is_file():
        raise DataError(f"{file} not found: {folder} is not a prepared dataset (run the prepare_data stage)")
    with np.load(file) as arrays:
        return Split(x=arrays["x"], y=arrays["y"].astype(np.int64))


def target_folder(folder: str | Path) -> Path:
    """The target domain's prepared dataset inside `folder` (written when data.target_source is set)."""
    target = Path(folder) / TARGET_DIR
    if not (target / "meta.json").is_file():
        raise DataError(f"{folder} holds no target domain: run prepare_data with data.target_source and "
                        "data.target_path set (e.g. --profile transfer)")
    return target


def to_tensors(split: Split, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and int64 labels as tensors on `device` (images stay uint8 until batched)."""
    return torch.from_numpy(split.x).to(device), torch.from_numpy(split.y).to(device)


def as_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [0, 1] in torch's default dtype (float32 unless a caller sets
    another, as the float64 equivalence tests do). Models normalise internally, so they take
    raw pixels."""
    return x_uint8.to(torch.get_default_dtype()).div_(255.0)


def noise_images(meta: DatasetMeta, n: int, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian images with the data's per-channel pixel mean and std, clipped to [0, 1]: what
    the `noise` method trains on (and its INT8 model is calibrated on). Reads no image."""
    shape = (1, meta.channels, 1, 1)
    mean = torch.tensor(meta.mean, device=device).view(shape)
    std = torch.tensor(meta.std, device=device).view(shape)
    z = (torch.randn(n, *meta.input_shape, device=device) if generator is None
         else torch.randn(n, *meta.input_shape, generator=generator).to(device))
    return (mean + std * z).clamp_(0, 1)


class StepBatches:
    """Batches as a pure function of the step: epoch e uses permutation seeded by (seed, e).

    Drop-last batching over a fixed-size tensor; no iterator state to checkpoint. With a
    distributed `world`, `batch_size` is the global batch and `indices` returns this rank's
    slice of it (every world.size-th index from its rank): the ranks together see exactly
    the batch one process would see at that step.
    """

    def __init__(self, n: int, batch_size: int, seed: int, world: World | None = None,
                 what: str = "batch_size"):
        if n < 1:
            raise DataError("cannot batch an empty split")
        self.n = n
        self.batch_size = min(batch_size, n)
        self.seed = seed
        self.world = world or World()
        if self.batch_size % self.world.size:
            raise ConfigError(f"{what}={self.batch_size} cannot be split evenly over {self.world.size} processes; "
                              f"use a multiple of {self.world.size} (it is the global batch, shared by all processes)")
        self.per_epoch = max(1, n // self.batch_size)
        self._cached_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def global_indices(self, step: int) -> torch.Tensor:
        """The whole batch of `step`, as one process would draw it."""
        epoch, within = divmod(step, self.per_epoch)
        if epoch != self._cached_epoch:
            # On the CPU on purpose, whatever the model's device: indices are cheap to draw
            # there, the draw is the same on every machine, and they index a device tensor fine.
            generator = torch.Generator(device="cpu").manual_seed(self.seed * 100_003 + epoch)
            self._perm = torch.randperm(self.n, generator=generator, device="cpu")
            self._cached_epoch = epoch
        return self._perm[within * self.batch_size : (within + 1) * self.batch_size]

    def indices(self, step: int) -> torch.Tensor:
        """This rank's part of the batch of `step` (all of it on one process)."""
        return shard(self.global_indices(step), self.world)


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with `fraction` of every class held out, seeded."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        n_held = max(1, round(len(idx) * fraction)) if len(idx) > 1 else 0
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))
