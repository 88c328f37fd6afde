"""PixelDA training (Bousmalis et al. 2017): a source → target translator G(x_a, z), a domain
discriminator D and a task classifier T, trained together.

Per step, on a source batch x_a with labels ŷ_a = argmax teacher(x_a) (the frozen teacher holds
the label: the source labels are the teacher's, as everywhere in gandistill), a target batch x_b
(images only) and noise z:

  D, T:  L_D = BCE(D(x_b), 1) + BCE(D(G(x_a, z)), 0)                         (domain classifier)
         L_T = CE(T(ad(x_a)), ŷ_a) + CE(T(G(x_a, z)), ŷ_a)                   (task classifier, eq. 4)
  G:     L_G = λ_adv·BCE(D(G(x_a, z)), 1) + λ_task·CE(T(G(x_a, z)), ŷ_a)      (non-saturating GAN; eq. 5)
               [+ λ_teacher·CE(teacher(ad⁻¹(G(x_a, z))), ŷ_a)]                (optional: the teacher judges too)

`ad` brings a source image to the target's size and channels (fixed; `ShapeAdapter`). T reads
target-shaped images: it learns the class on source images and on their translations, and, in the
generator step, it is what keeps G from changing the class — a translation that the task
classifier cannot read as ŷ_a costs G. Because T keeps learning on G's outputs, it is the first
classifier of the target domain (PixelDA's reported number is T's target accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gandistill import losses
from gandistill.nets.pixelda import NoisyDiscriminator, PixelDAGenerator
from gandistill.nets.translator import Shape, ShapeAdapter


@dataclass
class PixelDAWeights:
    adversarial: float = 1.0
    task: float = 1.0
    teacher: float = 0.0


class PixelDATranslator(nn.Module):
    """What the transfer stages use after training: G (source → target) and T (a target-domain
    classifier trained on source and translated images)."""

    def __init__(self, generator: PixelDAGenerator, task: nn.Module):
        super().__init__()
        self.generator, self.task = generator, task

    @property
    def shape_a(self) -> Shape:
        return self.generator.shape_a

    @property
    def shape_b(self) -> Shape:
        return self.generator.shape_b

    def translate(self, x_a: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(x_a, z)


def pixelda_step(translator: PixelDATranslator, discriminator: NoisyDiscriminator, teacher: nn.Module,
                 opt_g: torch.optim.Optimizer, opt_dt: torch.optim.Optimizer, x_a: torch.Tensor,
                 labels_a: torch.Tensor, x_b: torch.Tensor, weights: PixelDAWeights,
                 to_a: ShapeAdapter | None = None) -> dict[str, torch.Tensor]:
    """One D/T step then one G step (the paper alternates them, one each)."""
    g, task = translator.generator, translator.task
    adapt = g.adapt
    fake = g(x_a)
    # D and T
    loss_d = losses.d_loss_bce(discriminator(x_b), discriminator(fake.detach()))
    task_source = F.cross_entropy(task(adapt(x_a)), labels_a)
    task_translated = F.cross_entropy(task(fake.detach()), labels_a)
    opt_dt.zero_grad(set_to_none=True)
    (loss_d + task_source + task_translated).backward()
    opt_dt.step()
    # G
    adv = losses.g_loss_bce(discriminator(fake))
    task_g = F.cross_entropy(task(fake), labels_a)
    loss_g = weights.adversarial * adv + weights.task * task_g
    terms = {"loss_d": loss_d.detach(), "loss_task_source": task_source.detach(),
             "loss_task_translated": task_translated.detach(), "loss_g_adv": adv.detach(),
             "loss_g_task": task_g.detach()}
    if weights.teacher > 0:
        assert to_a is not None
        teacher_term = F.cross_entropy(teacher(to_a(fake)), labels_a)
        loss_g = loss_g + weights.teacher * teacher_term
        terms["loss_g_teacher"] = teacher_term.detach()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return terms | {"loss_g": loss_g.detach()}
