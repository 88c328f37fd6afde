"""Losses, each documented like a paper: formula, symbols, citation.

Symbols: t, s — teacher and student logits (N×K); y — integer labels (N); T — temperature;
σ — logistic sigmoid; p^T = softmax(t/T); D(x, y) — discriminator logit; φ(x) — D's
penultimate features; G(z, y) — generated images; f^T, f^S — teacher/student features.
All losses return a scalar mean over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------
# Knowledge distillation


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al., "Distilling the Knowledge in a Neural Network", 2015.

    L_KD = T² · KL(p^T ‖ p^S) = T² · Σ_k p^T_k (log p^T_k − log p^S_k),  p = softmax(logits / T).
    The T² factor keeps gradient magnitudes comparable across temperatures (§2).
    """
    return kd_kl_per_sample(student_logits, teacher_logits, temperature).mean()


def kd_kl_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """`kd_kl` per sample (no batch mean): T² · Σ_k p^T_k (log p^T_k − log p^S_k), shape (N,)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1) * temperature**2


def kd_objective(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None,
                 temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al. 2015, eq. of §2: L = α · T²·KL(p^T ‖ p^S) + (1 − α) · CE(s, y).

    With labels None (pure soft-label distillation) the CE term is dropped and L = T²·KL.
    """
    soft = kd_kl(student_logits, teacher_logits, temperature)
    if labels is None or alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


def logit_l1(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Fang et al., "Data-Free Adversarial Distillation" (DFAD), 2019, eq. 3.

    L_MAE = (1/(N·K)) Σ_n ‖t_n − s_n‖₁. The student minimises it; the generator maximises it.
    """
    return F.l1_loss(student_logits, teacher_logits)


def fitnet_hint(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015, eq. 2.

    L_HT = ½ ‖f^T − r(f^S)‖² averaged over elements, where r is a learned regressor applied
    by the caller (`student_feature` is already r(f^S), same shape as f^T).
    """
    return 0.5 * F.mse_loss(student_feature, teacher_feature)


def _attention(feature: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """q = vec(F(A)) / ‖vec(F(A))‖₂ with F(A) = mean_c A_c² (N×C×H×W → N×HW), pooled to `size`."""
    energy = F.adaptive_avg_pool2d(feature.float().pow(2).mean(dim=1, keepdim=True), size)
    return F.normalize(energy.flatten(1), dim=1)


def attention_transfer(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of
    Convolutional Neural Networks via Attention Transfer", ICLR 2017, eq. 2 (activation-based AT):

        L_AT = (1 / (N·HW)) Σ_n ‖ q_S^n − q_T^n ‖₂²,   q = vec(Σ_c A_c²) / ‖vec(Σ_c A_c²)‖₂

    with A_S, A_T the student's and teacher's activations (N×C×H×W) at one spatial layer; the
    channel counts may differ (the maps sum over channels; a mean normalises the same). The mean
    over batch and positions is the authors' code, whose β = 1000 multiplies it (the paper's β/2
    "divided by the number of elements in the attention map and the batch size"). When the
    spatial sizes differ, the larger map is average-pooled to the smaller one first.
    """
    size = (min(student_feature.shape[2], teacher_feature.shape[2]),
            min(student_feature.shape[3], teacher_feature.shape[3]))
    return (_attention(student_feature, size) - _attention(teacher_feature, size)).pow(2).mean()


def _pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    sq = e.pow(2).sum(dim=1)
    dist = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp_min(eps).sqrt()
    dist = dist.clone()
    dist[range(len(e)), range(len(e))] = 0
    return dist


def rkd_distance(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Park et al., "Relational Knowledge Distillation", CVPR 2019, eq. 5–6.

    ψ_D(t_i, t_j) = ‖t_i − t_j‖₂ / μ with μ the mean pairwise distance in the batch;
    L_RKD-D = Σ_{i≠j} ℓ_δ(ψ_D(t_i, t_j), ψ_D(s_i, s_j)), ℓ_δ = Huber (smooth L1, δ = 1), mean.
    """
    s, t = student_emb.flatten(1), teacher_emb.flatten(1)
    with torch.no_grad():
        t_d = _pairwise_distances(t)
        t_d = t_d / t_d[t_d > 0].mean()
    s_d = _pairwise_distances(s)
    s_d = s_d / s_d[s_d > 0].mean()
    return F.smooth_l1_loss(s_d, t_d)


def rkd_angle(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Park et al., CVPR 2019, eq. 7–8.

    ψ_A(t_i, t_j, t_k) = cos ∠t_i t_j t_k = ⟨e^{ij}, e^{kj}⟩ with e^{ij} = (t_i − t_j)/‖t_i − t_j‖;
    L_RKD-A = Σ_{i,j,k} ℓ_δ(ψ_A(t), ψ_A(s)), Huber loss, mean over triplets.
    """

    def angles(e: torch.Tensor) -> torch.Tensor:
        diff = e[None, :, :] - e[:, None, :]  # diff[j, i] = e_i − e_j
        unit = F.normalize(diff, p=2, dim=2)
        return torch.bmm(unit, unit.transpose(1, 2)).flatten()

    s, t = student_emb.flatten(1), teacher_emb.flatten(1)
    with torch.no_grad():
        t_a = angles(t)
    return F.smooth_l1_loss(angles(s), t_a)


# ---------------------------------------------------------------------------------------
# GAN objectives


def d_loss_bce(real_logit: torch.Tensor, fake_logit: torch.Tensor) -> torch.Tensor:
    """Goodfellow et al. 2014; conditional form of Mirza & Osindero 2014.

    L_D = −E[log D(x, y)] − E[log(1 − D(G(z, y), y))] with D = σ(logit).
    """
    return F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit)) + \
        F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))


def g_loss_bce(fake_logit: torch.Tensor, saturating: bool = False) -> torch.Tensor:
    """Generator adversarial term.

    saturating=True: the minimax form L_G = E[log(1 − D(G(z, y), y))] (Goodfellow 2014, eq. 1).
    saturating=False (default): the non-saturating form L_G = −E[log D(G(z, y), y)] (same paper,
    §3) — same fixed point, but strong gradients early when D rejects every sample.
    """
    if saturating:
        return -F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
    return F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))


def d_loss_hinge(real_logit: torch.Tensor, fake_logit: torch.Tensor) -> torch.Tensor:
    """Lim & Ye 2017 (Geometric GAN); Miyato et al. 2018 (SNGAN).

    L_D = E[max(0, 1 − D(x, y))] + E[max(0, 1 + D(G(z, y), y))].
    """
    return F.relu(1.0 - real_logit).mean() + F.relu(1.0 + fake_logit).mean()


def g_loss_hinge(fake_logit: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss: L_G = −E[D(G(z, y), y)]."""
    return -fake_logit.mean()


def feature_matching(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Salimans et al., "Improved Techniques for Training GANs", 2016, §3.1.

    L_FM = ‖E_x φ(x) − E_z φ(G(z))‖²₂, φ = D's penultimate features; real features are a target
    (no gradient). Divided by the feature dimension so λ does not depend on D's width.
    """
    diff = real_features.detach().mean(dim=0) - fake_features.mean(dim=0)
    return diff.pow(2).sum() / real_features.shape[1]


def teacher_guidance(teacher_logits_on_fake: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Teacher-guided generation: L_T = CE(teacher(G(z, y)), y).

    Pushes G(z, y) into the region the teacher assigns to class y (the "one-hot" idea of
    DAFL, Chen et al. 2019, eq. 2, applied to the conditioning label).
    """
    return F.cross_entropy(teacher_logits_on_fake, labels)


def mode_seeking(images: torch.Tensor, z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mao et al., "Mode Seeking GANs", CVPR 2019, eq. 3 (pairs within the batch).

    L_ms = mean_i  ‖z_{2i} − z_{2i+1}‖₁ / ‖G(z_{2i}) − G(z_{2i+1})‖₁ : minimising it makes
    distinct latents map to distinct images (discourages collapse).
    """
    half = images.shape[0] // 2
    a, b = images[:half].flatten(1), images[half : 2 * half].flatten(1)
    za, zb = z[:half], z[half : 2 * half]
    return ((za - zb).abs().mean(dim=1) / ((a - b).abs().mean(dim=1) + eps)).mean()


# ---------------------------------------------------------------------------------------
# Data-free generator objectives


def dafl_onehot(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Chen et al., "Data-Free Learning of Student Networks" (DAFL), ICCV 2019, eq. 2.

    L_oh = (1/N) Σ_n CE(t_n, argmax t_n): generated samples should be classified confidently.
    """
    return F.cross_entropy(teacher_logits, teacher_logits.argmax(dim=1))


def dafl_activation(teacher_features: torch.Tensor) -> torch.Tensor:
    """DAFL eq. 3: L_a = −(1/N) Σ_n ‖f^T_n‖₁ (mean over feature elements here, so the weight
    does not depend on the feature width): real images excite the teacher's features strongly."""
    return -teacher_features.abs().mean()


def information_entropy(teacher_logits: torch.Tensor) -> torch.Tensor:
    """DAFL eq. 4: L_ie = −H_info( (1/N) Σ_n softmax(t_n) ), H(p) = −Σ_k p_k log p_k.

    Minimising L_ie maximises the entropy of the batch-mean prediction: balanced classes.
    """
    mean_p = F.softmax(teacher_logits, dim=1).mean(dim=0)
    return (mean_p * torch.log(mean_p + 1e-8)).sum()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation, R_TV(x) = mean |x[i+1, j] − x[i, j]| + mean |x[i, j+1] − x[i, j]|
    over every channel and sample: a smoothness prior on synthesised images (Mahendran & Vedaldi
    2015; used by DeepInversion, Yin et al. 2020, as R_TV). It keeps a data-free generator away
    from the high-frequency textures that fool the teacher without looking like any class."""
    return (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean() + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()


def class_coverage(probs: torch.Tensor) -> torch.Tensor:
    """Normalised entropy of the mean prediction, H(mean p) / log K ∈ [0, 1].

    1 = every class predicted equally often; near 0 = collapse onto one class. A monitoring
    metric (no gradient needed), used for collapse detection.
    """
    mean_p = probs.mean(dim=0).clamp_min(1e-12)
    return -(mean_p * mean_p.log()).sum() / math.log(probs.shape[1])


# ---------------------------------------------------------------------------------------
# Adversarial KD on outputs


def output_discriminator_loss(teacher_score: torch.Tensor, student_score: torch.Tensor) -> torch.Tensor:
    """Xu et al., "Training Shallow and Thin Networks for Acceleration via Knowledge
    Distillation with Conditional Adversarial Networks", 2017/2018, eq. 2.

    A discriminator D_o(logits, y) tells teacher outputs (1) from student outputs (0):
    L_Do = −E[log D_o(t, y)] − E[log(1 − D_o(s, y))]; the student adds −E[log D_o(s, y)].
    """
    return d_loss_bce(teacher_score, student_score)


# ---------------------------------------------------------------------------------------
# Unpaired image translation (CycleGAN, CyCADA)


def lsgan_d_loss(real_score: torch.Tensor, fake_score: torch.Tensor) -> torch.Tensor:
    """Mao et al., "Least Squares Generative Adversarial Networks", ICCV 2017, eq. 9 (a = 0,
    b = c = 1), the adversarial loss CycleGAN trains with (Zhu et al. 2017, §4 "Training details").

    L_D = ½·E[(D(y) − 1)²] + ½·E[D(G(x))²], means over every patch score of a PatchGAN D.
    """
    return 0.5 * ((real_score - 1).pow(2).mean() + fake_score.pow(2).mean())


def lsgan_g_loss(fake_score: torch.Tensor) -> torch.Tensor:
    """Least-squares generator term (same papers): L_G = E[(D(G(x)) − 1)²]."""
    return (fake_score - 1).pow(2).mean()


def cycle_consistency(original: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    """Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
    Networks" (CycleGAN), ICCV 2017, eq. 2, one direction:

    L_cyc = E‖G_BA(G_AB(x_a)) − x_a‖₁ (mean absolute pixel error); the caller adds both
    directions. Forces translations to keep what is needed to come back: content, here the digit.
    """
    return (reconstructed - original).abs().mean()


def identity_mapping(target_domain_image: torch.Tensor, mapped: torch.Tensor) -> torch.Tensor:
    """Zhu et al. 2017, §5.2 (after Taigman et al. 2017): L_id = E‖G_AB(x_b) − x_b‖₁ — a
    generator fed an image already of its output domain should leave it unchanged (keeps
    colours and intensities from drifting). With domains of different shape the caller first
    brings x_b to the generator's input shape (gandistill.nets.translator.ShapeAdapter)."""
    return (mapped - target_domain_image).abs().mean()


def semantic_consistency(teacher_logits_on_translated: torch.Tensor, source_labels: torch.Tensor) -> torch.Tensor:
    """Hoffman et al., "CyCADA: Cycle-Consistent Adversarial Domain Adaptation", ICML 2018, eq. 4
    (source direction): L_sem = CE(f_S(G_AB(x_a)), ŷ_a), ŷ_a = argmax f_S(x_a) — the frozen source
    classifier (the teacher) must still recognise a translated image as what it was."""
    return F.cross_entropy(teacher_logits_on_translated, source_labels)


LOSSES = {
    "kd_kl": kd_kl,
    "kd": kd_objective,
    "logit_l1": logit_l1,
    "fitnet_hint": fitnet_hint,
    "rkd_distance": rkd_distance,
    "rkd_angle": rkd_angle,
    "d_bce": d_loss_bce,
    "g_bce": g_loss_bce,
    "d_hinge": d_loss_hinge,
    "g_hinge": g_loss_hinge,
    "feature_matching": feature_matching,
    "teacher_guidance": teacher_guidance,
    "mode_seeking": mode_seeking,
    "dafl_onehot": dafl_onehot,
    "dafl_activation": dafl_activation,
    "information_entropy": information_entropy,
    "output_discriminator": output_discriminator_loss,
}
