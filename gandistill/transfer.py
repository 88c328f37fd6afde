"""Cross-domain transfer glue shared by train_translator, distill, evaluate and export: where a
method's data lives, the translator on disk, and the teacher as seen from the target domain.

The teacher knows the source domain A only. A target-domain student (methods with
`domain == "target"`) reads target images B, so every stage that handles it reads the target
split (`data/target/`), and a teacher signal for a B image comes from one of two views:

- `source_only`: the teacher on the raw target image, converted to its input shape — what the
  teacher alone can do on B (and the label source of plain KD, `target_kd`);
- `through_translator`: the teacher on G_BA(x_b), the target image translated to A (`cyclegan`), or
  PixelDA's task classifier T(x_b), trained on source images translated to B (`pixelda`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandistill import methods
from gandistill.data.dataset import DatasetMeta, target_folder
from gandistill.loop import atomic_torch_save
from gandistill.nets.pixelda import PixelDAGenerator
from gandistill.nets.translator import AdaptedClassifier, CycleTranslator, ShapeAdapter
from gandistill.pixelda import PixelDATranslator

MODEL_FILE = "model.pt"
# The A and B sets may be built from the same images (MNIST-M from MNIST): their batch orders must
# differ, or equal permutations would hand the "unpaired" translator exact pairs.
TARGET_ORDER_OFFSET = 7_919


def method_data_dir(data_dir: str | Path, method: str) -> Path:
    """The prepared dataset a method's student trains and is evaluated on: the target domain's
    for target-domain methods, else the dataset itself."""
    return target_folder(data_dir) if methods.get(method).domain == "target" else Path(data_dir)


class TranslatedClassifier(nn.Module):
    """classifier(G_BA(x)): a source-domain classifier reading target images through the translator."""

    def __init__(self, g_ba: nn.Module, classifier: nn.Module):
        super().__init__()
        self.g_ba, self.classifier = g_ba, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.g_ba(x))


def source_only(teacher: nn.Module, meta_a: DatasetMeta, meta_b: DatasetMeta) -> AdaptedClassifier:
    """The teacher reading raw target images (converted to its input shape, no learning)."""
    return AdaptedClassifier(ShapeAdapter(meta_b.input_shape, meta_a.input_shape), teacher).eval()


def through_translator(teacher: nn.Module, translator: CycleTranslator | PixelDATranslator) -> nn.Module:
    """The teacher signal for a target image that the translator provides: the teacher on G_BA(x_b)
    (CycleGAN), or PixelDA's task classifier T(x_b), trained on translated source images."""
    if isinstance(translator, PixelDATranslator):
        return translator.task.eval()
    return TranslatedClassifier(translator.g_ba, teacher).eval()


def save_translator(translator: CycleTranslator, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    path = Path(out_dir) / MODEL_FILE
    g_ab = translator.g_ab
    atomic_torch_save({"kind": "translator", "state_dict": translator.state_dict(),
                       "shape_a": list(translator.shape_a), "shape_b": list(translator.shape_b),
                       "ngf": g_ab.ngf, "n_blocks": g_ab.n_blocks, **(extra or {})}, path)
    return path


def save_pixelda(translator: PixelDATranslator, task_arch: str, meta_b: DatasetMeta, out_dir: str | Path,
                 extra: dict[str, Any] | None = None) -> Path:
    path = Path(out_dir) / MODEL_FILE
    g = translator.generator
    atomic_torch_save({"kind": "pixelda", "state_dict": translator.state_dict(),
                       "shape_a": list(g.shape_a), "shape_b": list(g.shape_b), "width": g.width,
                       "n_blocks": g.n_blocks, "nz": g.nz, "task_arch": task_arch,
                       "num_classes": meta_b.num_classes, "mean": list(meta_b.mean), "std": list(meta_b.std),
                       **(extra or {})}, path)
    return path


def load_translator(folder: str | Path, device: torch.device | str = "cpu") -> CycleTranslator | PixelDATranslator:
    """The trained translator (CycleGAN pair or PixelDA generator + task classifier), frozen: it only
    translates and labels once trained."""
    from gandistill.errors import DataError
    from gandistill.nets import build_classifier

    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise DataError(f"{path} not found: the train_translator stage did not produce a translator")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    shape_a, shape_b = tuple(blob["shape_a"]), tuple(blob["shape_b"])
    translator: CycleTranslator | PixelDATranslator
    if blob["kind"] == "pixelda":
        task = build_classifier(blob["task_arch"], shape_b[0], shape_b[1:], blob["num_classes"], mean=blob["mean"],
                                std=blob["std"])
        translator = PixelDATranslator(PixelDAGenerator(shape_a, shape_b, blob["width"], blob["n_blocks"], blob["nz"]),
                                       task)
    else:
        translator = CycleTranslator(shape_a, shape_b, blob["ngf"], blob["n_blocks"])
    translator.load_state_dict(blob["state_dict"])
    translator = translator.to(device).eval()
    for p in translator.parameters():
        p.requires_grad_(False)
    return translator
