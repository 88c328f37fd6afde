"""Add-on terms any method can use on top of its own loss, on (student, teacher) features:
FitNets hint through a learned 1×1-conv regressor (`distill.hint_weight`), attention transfer
(`distill.attention_weight`) and RKD distance / angle on penultimate features
(`distill.rkd_*_weight`). `context.forward_pair` applies them."""

from __future__ import annotations

import torch
from torch import nn

from gandistill import losses, methods
from gandistill.config import Params
from gandistill.data.dataset import DatasetMeta
from gandistill.distributed import World, gather
from gandistill.errors import ConfigError


class AddOns(nn.Module):
    """FitNets hint regressor, attention transfer and RKD terms, applied to (student, teacher)
    feature lists (features[0]: the last spatial map; features[-1]: the penultimate vector)."""

    def __init__(self, params: Params, student: nn.Module, teacher: nn.Module, meta: DatasetMeta,
                 world: World | None = None):
        super().__init__()
        dp = params.distill
        self.world = world or World()
        self.hint_weight, self.rkd_d, self.rkd_a = dp.hint_weight, dp.rkd_distance_weight, dp.rkd_angle_weight
        self.attention_weight = dp.attention_weight
        self.regressor: nn.Module | None = None
        needs_features = [k for k, v in (("distill.hint_weight", dp.hint_weight),
                                         ("distill.attention_weight", dp.attention_weight),
                                         ("distill.rkd_distance_weight", dp.rkd_distance_weight),
                                         ("distill.rkd_angle_weight", dp.rkd_angle_weight)) if v > 0]
        if methods.get(dp.method).needs_teacher_features:
            needs_features.append(f"distill.method={dp.method}")
        if needs_features and not hasattr(teacher, "forward_features"):
            raise ConfigError(f"{', '.join(needs_features)} need(s) teacher features, but this teacher (an imported "
                              "TorchScript model) provides logits only — turn those settings off")
        if self.hint_weight > 0:
            probe = torch.zeros(2, *meta.input_shape, device=next(student.parameters()).device)
            with torch.no_grad():
                s_feat = student.forward_features(probe)[1][0]
                t_feat = teacher.forward_features(probe)[1][0]
            if s_feat.shape[2:] != t_feat.shape[2:]:
                raise ConfigError(f"distill.hint_weight: student hint map {tuple(s_feat.shape[1:])} and teacher "
                                  f"map {tuple(t_feat.shape[1:])} differ in spatial size; pick a matching pair")
            self.regressor = nn.Conv2d(s_feat.shape[1], t_feat.shape[1], 1)

    @property
    def active(self) -> bool:
        return self.hint_weight > 0 or self.attention_weight > 0 or self.rkd_d > 0 or self.rkd_a > 0

    def forward(self, s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if self.regressor is not None:
            terms["hint"] = self.hint_weight * losses.fitnet_hint(self.regressor(s_feats[0]), t_feats[0].detach())
        if self.attention_weight > 0:
            terms["attention"] = self.attention_weight * losses.attention_transfer(s_feats[0], t_feats[0].detach())
        if self.rkd_d > 0 or self.rkd_a > 0:  # relations between all samples of the global batch
            s_emb, t_emb = gather(s_feats[-1], self.world), gather(t_feats[-1], self.world)
        if self.rkd_d > 0:
            terms["rkd_distance"] = self.rkd_d * losses.rkd_distance(s_emb, t_emb)
        if self.rkd_a > 0:
            terms["rkd_angle"] = self.rkd_a * losses.rkd_angle(s_emb, t_emb)
        return terms
