"""Models on disk: the `model.pt` a stage writes and the next one rebuilds.

A model file holds the weights plus everything needed to rebuild the module (architecture name,
input shape, classes, normalisation statistics), and loads with `torch.load(weights_only=True)`.
Classifiers (teacher, student), generators (the trained cGAN, a data-free method's own) live
here; the translator's file is `gandistill.transfer`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandistill.data.dataset import DatasetMeta
from gandistill.errors import DataError
from gandistill.loop import atomic_torch_save
from gandistill.nets import build_classifier, build_gan
from gandistill.nets.gan import DFADGenerator, MLPDiscriminator, MLPGenerator
from gandistill.nets.resgan import ProjectionDiscriminator, ResNetGenerator

MODEL_FILE = "model.pt"
FREE_GENERATOR_DIR = "generator"  # inside a data-free student's folder


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


def save_free_generator(generator: nn.Module, state: dict[str, Any], student_dir: str | Path) -> Path:
    """Save the generator a data-free method trained with its student (in the state selected
    with the student), next to it. It was only ever sampled with BatchNorm on batch statistics,
    so it is marked to be sampled that way again."""
    generator.load_state_dict(state)
    return save_generator(generator.cpu(), Path(student_dir) / FREE_GENERATOR_DIR,
                          extra={"sampling": "batch_statistics"})
