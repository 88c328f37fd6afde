"""Helpers every stage shares: model files, fingerprints, checkpoints folders, evaluation."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandistill.checkpoint_store import CHECKPOINT_ROOT_ENV
from gandistill.config import Params
from gandistill.data.dataset import DatasetMeta, as_float
from gandistill.errors import DataError
from gandistill.files import atomic_write_text, file_hash
from gandistill.loop import atomic_torch_save
from gandistill.nets import build_classifier, build_gan
from gandistill.nets.gan import DFADGenerator, MLPDiscriminator, MLPGenerator
from gandistill.nets.resgan import ProjectionDiscriminator, ResNetGenerator
from gandistill.runtime import Runtime
from gandistill.storage import is_s3

MODEL_FILE = "model.pt"
RESULT_FILE = "result.json"


def fingerprint(*parts: Any) -> str:
    """Stable hash of params sections and input identities: a checkpoint is resumed only by
    the run that would have produced it."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """A short content identity of a model file (the first 16 hex digits of its sha256)."""
    return file_hash(path, "sha256")[:16]


def checkpoint_dir(stage: str, fp: str) -> str | Path:
    """Stable location of a stage's checkpoints, outside the (per-execution) output artifact,
    so re-running the same task after a crash finds them: a folder under
    GANDISTILL_CHECKPOINT_ROOT, or an s3:// prefix when the root is one (a retried pod on
    another node resumes from there; see checkpoint_store)."""
    root = os.environ.get(CHECKPOINT_ROOT_ENV) or "runs/checkpoints"
    if is_s3(root):
        return f"{root.rstrip('/')}/{stage}-{fp}"
    return Path(root) / f"{stage}-{fp}"


def write_result(out_dir: str | Path, result: dict[str, Any]) -> None:
    atomic_write_text(Path(out_dir) / RESULT_FILE, json.dumps(result, indent=2, default=float))


def follower_result(runtime: Runtime, steps: int | None = None) -> dict[str, Any]:
    """What a rank other than 0 returns from a training stage: it trained its share and
    stops there — rank 0 alone writes the model, result.json and the final metrics."""
    return {"rank": runtime.rank, "world_size": runtime.world_size, "steps": steps, "writes": False}


def read_result(folder: str | Path) -> dict[str, Any]:
    file = Path(folder) / RESULT_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


# -- classifiers on disk ------------------------------------------------------------------

def save_classifier(model: nn.Module, arch: str, meta: DatasetMeta, out_dir: str | Path,
                    extra: dict[str, Any] | None = None) -> Path:
    """Save weights plus everything needed to rebuild the model (weights_only-loadable)."""
    path = Path(out_dir) / MODEL_FILE
    atomic_torch_save({
        "kind": "classifier", "arch": arch, "state_dict": model.state_dict(),
        "in_channels": meta.channels, "image_size": [meta.height, meta.width],
        "num_classes": meta.num_classes, "class_names": list(meta.class_names),
        "mean": list(meta.mean), "std": list(meta.std), **(extra or {}),
    }, path)
    return path


def load_model_file(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise DataError(f"{path} not found: the upstream stage did not produce a model")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_classifier(folder: str | Path) -> nn.Module:
    """Rebuild a classifier saved by `save_classifier` (or a TorchScript file in the folder)."""
    script = Path(folder) / "model.ts"
    if script.is_file() and not (Path(folder) / MODEL_FILE).is_file():
        return torch.jit.load(str(script), map_location="cpu")
    blob = load_model_file(folder)
    model = build_classifier(blob["arch"], blob["in_channels"], tuple(blob["image_size"]), blob["num_classes"],
                             mean=blob["mean"], std=blob["std"])
    model.load_state_dict(blob["state_dict"])
    return model.eval()


def load_frozen_teacher(folder: str | Path, device: torch.device | str) -> nn.Module:
    """The teacher in eval mode with gradients off: it judges and labels, it never learns."""
    teacher = load_classifier(folder).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _generator_arch(generator: nn.Module) -> str:
    """The `build_gan` name that rebuilds `generator`."""
    if isinstance(generator, DFADGenerator):
        return "dfad"
    if isinstance(generator, ResNetGenerator):
        return "resnet"
    return "mlp" if isinstance(generator, MLPGenerator) else "conv"


def save_generator(generator: nn.Module, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Weights plus what rebuilds the generator, including its pixel output mode (a data-free
    generator's "normalised" output carries BatchNorm state and the data's mean/std)."""
    path = Path(out_dir) / MODEL_FILE
    atomic_torch_save({
        "kind": "generator", "arch": _generator_arch(generator),
        "state_dict": generator.state_dict(), "nz": generator.nz,
        "num_classes": generator.num_classes, "image_size": list(generator.image_size),
        "out_channels": generator.out_channels, "ngf": generator.ngf,
        "output": generator.to_pixels.mode if hasattr(generator, "to_pixels") else "sigmoid",
        **(extra or {}),
    }, path)
    return path


def load_generator(folder: str | Path) -> nn.Module:
    blob = load_model_file(folder)
    generator, _ = build_gan(blob.get("arch", "conv"), blob["nz"], blob["num_classes"], blob["out_channels"],
                             tuple(blob["image_size"]), blob["ngf"], 8, hidden=blob["ngf"],
                             output=blob.get("output", "sigmoid"))
    generator.load_state_dict(blob["state_dict"])
    return generator.eval()


def discriminator_record(disc: nn.Module, state: dict[str, Any], ndf: int, hidden: int,
                         spectral_norm: bool) -> dict[str, Any]:
    """What rebuilds a cGAN's discriminator (in `state`), stored inside the generator's file."""
    arch = "mlp" if isinstance(disc, MLPDiscriminator) else "resnet" if isinstance(disc, ProjectionDiscriminator) \
        else "conv"
    return {"state_dict": state, "arch": arch,
            "ndf": ndf, "hidden": hidden, "spectral_norm": spectral_norm}


def load_discriminator(folder: str | Path) -> nn.Module | None:
    """The discriminator saved with a trained cGAN's generator (None for generators saved
    without one: data-free generators, or a cGAN trained before it was kept)."""
    blob = load_model_file(folder)
    record = blob.get("discriminator")
    if record is None:
        return None
    _, disc = build_gan(record["arch"], blob["nz"], blob["num_classes"], blob["out_channels"],
                        tuple(blob["image_size"]), blob["ngf"], record["ndf"], record["spectral_norm"],
                        hidden=record["hidden"])
    disc.load_state_dict(record["state_dict"])
    return disc.eval()


# -- evaluation ---------------------------------------------------------------------------

@torch.no_grad()
def predict_logits(model: nn.Module, x_uint8: torch.Tensor, batch_size: int = 1000,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    model.eval()
    outs = []
    for start in range(0, len(x_uint8), batch_size):
        outs.append(model(as_float(x_uint8[start : start + batch_size].to(device))).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean()) if len(labels) else float("nan")


def params_sections(params: Params, *names: str) -> dict[str, Any]:
    return {name: getattr(params, name).model_dump() for name in names} | {"seed": params.seed}


FREE_GENERATOR_DIR = "generator"  # inside a data-free student's folder


def save_free_generator(generator: nn.Module, state: dict[str, Any], student_dir: str | Path) -> Path:
    """Save the generator a data-free method trained with its student (in the state selected
    with the student), next to it. It was only ever sampled with BatchNorm on batch statistics,
    so it is marked to be sampled that way again."""
    generator.load_state_dict(state)
    return save_generator(generator.cpu(), Path(student_dir) / FREE_GENERATOR_DIR,
                          extra={"sampling": "batch_statistics"})
