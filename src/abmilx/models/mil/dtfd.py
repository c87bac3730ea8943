"""DTFD-MIL (Zhang et al., 2022) with aggregated feature selection (AFS).

Per slide, h = embed(x); the instances are split into `n_pseudo_bags` (5) pseudo-bags, by a
fresh random permutation per slide in training and by a permutation fixed by `split_seed` in
eval (so predictions are deterministic and a slide's split does not depend on its batch).
Tier 1: each pseudo-bag g is pooled by gated attention, f_g = sum_i a_gi h_i, and classified
by a Linear(512 -> C). `distill="afs"` (aggregated feature selection, the default) passes f_g
itself to tier 2; `distill="max_attention"` passes the embedding of the pseudo-bag's most
attended instance instead (close to the official MaxS, which ranks by the instance CAM).
Tier 2: gated attention over the pseudo-bag features f_1..f_G and a Linear(512 -> C) give the
slide logits. `aux_loss` is the mean tier-1 cross-entropy, each pseudo-bag taking the slide's
label; the official training sums both tiers' CE with equal weight (aux_weight = 1), and one
optimizer over both tiers replaces the official two-optimizer loop.
Attention output: tier-2 weight of an instance's pseudo-bag times its tier-1 weight, which
sums to 1 over the slide. Invariant to instance order only in expectation (the split is not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_mil
from .base import (
    InstanceEmbedding,
    MILOutput,
    as_bag_batch,
    check_choice,
    init_linears_xavier,
    training_labels,
)
from .clam import GatedAttention


class DTFD(nn.Module):
    """0.790 M parameters for in_dim 1024 and 2 classes (DTFD has no entry in the paper's
    #Parameter column)."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        hidden_dim: int = 512,
        attn_dim: int = 128,
        n_pseudo_bags: int = 5,
        split_seed: int = 0,
        distill: str = "afs",
        act: str = "relu",
        dropout: float = 0.25,
        mil_norm: str | None = "none",
        mil_bias: bool = True,
    ):
        super().__init__()
        check_choice("distill", distill, ("afs", "max_attention"))
        self.n_pseudo_bags, self.split_seed, self.distill = n_pseudo_bags, split_seed, distill
        self.embed = InstanceEmbedding(in_dim, hidden_dim, act, dropout, mil_norm, mil_bias)
        self.tier1_attention = GatedAttention(hidden_dim, attn_dim, 1, dropout=0.0)
        self.tier1_classifier = nn.Linear(hidden_dim, n_classes)
        self.tier2_attention = GatedAttention(hidden_dim, attn_dim, 1, dropout=0.0)
        self.classifier = nn.Linear(hidden_dim, n_classes, bias=mil_bias)
        init_linears_xavier(self)

    def _split_order(self, batch: int, n_instances: int, device) -> torch.Tensor:
        """(B, N) instance permutation; consecutive chunks of it are the pseudo-bags."""
        if self.training:
            return torch.rand(batch, n_instances, device=device).argsort(dim=-1)
        fixed = torch.Generator().manual_seed(self.split_seed)
        order = torch.randperm(n_instances, generator=fixed).to(device)
        return order.expand(batch, -1)

    def forward(
        self,
        x: torch.Tensor,
        coords: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> MILOutput:
        h = self.embed(as_bag_batch(x))  # (B, N, hidden)
        batch, n_instances, _ = h.shape
        order = self._split_order(batch, n_instances, h.device)
        groups = torch.tensor_split(order, min(self.n_pseudo_bags, n_instances), dim=1)
        pooled, distilled, weights = [], [], []
        for group in groups:
            members = h.gather(1, group[..., None].expand(-1, -1, h.shape[-1]))
            attention = self.tier1_attention(members)  # (B, 1, n_g)
            pooled.append((attention @ members).squeeze(1))
            top = attention.argmax(dim=-1, keepdim=True).expand(-1, -1, h.shape[-1])
            distilled.append(members.gather(1, top).squeeze(1))
            weights.append(attention.squeeze(1))
        pooled = torch.stack(pooled, dim=1)  # (B, G, hidden)
        features = pooled if self.distill == "afs" else torch.stack(distilled, dim=1)
        group_attention = self.tier2_attention(features)  # (B, 1, G)
        slide = (group_attention @ features).squeeze(1)
        instance_attention = torch.cat(
            [w * group_attention[:, 0, g : g + 1] for g, w in enumerate(weights)], dim=1
        )
        attention = torch.zeros_like(instance_attention).scatter(1, order, instance_attention)
        labels = training_labels(self, labels, batch)
        aux = None
        if labels is not None:
            tier1_logits = self.tier1_classifier(pooled)  # (B, G, C)
            repeated = labels.to(h.device)[:, None].expand(-1, pooled.shape[1])
            aux = F.cross_entropy(tier1_logits.flatten(0, 1), repeated.flatten())
        return MILOutput(self.classifier(slide), attention[:, None], slide, aux)


@register_mil("dtfd")
def dtfd(in_dim: int, n_classes: int, **options) -> DTFD:
    return DTFD(in_dim, n_classes, **options)
