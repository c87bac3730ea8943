"""CLAM (Lu et al., 2021): gated attention pooling plus instance-level clustering losses.

Per slide, with h = embed(x) (N x 512) and gated attention A = softmax_N(W_c(tanh(W_a h) *
sigmoid(W_b h))), the single-branch model (`clam_sb`) classifies A h; the multi-branch model
(`clam_mb`) has one attention branch and one Linear(512 -> 1) scorer per class.

Instance loss (training with labels): for the slide's class c, the k_sample instances with the
highest attention (branch c for MB) are pseudo-labelled positive and the k_sample lowest
negative for instance classifier c, a Linear(512 -> 2). With `subtyping=True` the other
classes' classifiers also see their top-k instances as negatives and the sum is averaged over
classes (the official code's default is subtyping=False). CLAM weights the losses as
0.7 * bag + 0.3 * instance, i.e. the trainer should use aux_weight = 0.3 / 0.7 on top of the
bag loss, or scale both. The CLAM_SB in the official ABMILX repository crashes at batch size 1;
here any batch size works and the aux loss is the mean over the bags.
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
    canonical_mil_norm,
    check_choice,
    init_linears_xavier,
    training_labels,
)

INSTANCE_LOSSES = ("svm", "ce")


def smooth_top1_svm_loss(
    scores: torch.Tensor, targets: torch.Tensor, alpha: float = 1.0, tau: float = 1.0
) -> torch.Tensor:
    """Smooth top-1 multiclass SVM (Berrada et al., 2018), CLAM's default instance loss.

    tau * logsumexp_j((s_j + alpha [j != y]) / tau) - s_y, averaged over samples; tends to
    the hinge max_j(s_j + alpha [j != y]) - s_y as tau -> 0.
    """
    margins = alpha * (1.0 - F.one_hot(targets, scores.shape[-1]).to(scores.dtype))
    smooth_max = tau * torch.logsumexp((scores + margins) / tau, dim=-1)
    return (smooth_max - scores.gather(-1, targets[:, None]).squeeze(-1)).mean()


class GatedAttention(nn.Module):
    """Linear(d->a)+Tanh+Dropout times Linear(d->a)+Sigmoid+Dropout, then Linear(a->branches)."""

    def __init__(self, dim: int, attn_dim: int, n_branches: int, dropout: float):
        super().__init__()
        self.value = nn.Sequential(nn.Linear(dim, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.gate = nn.Sequential(nn.Linear(dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.score = nn.Linear(attn_dim, n_branches)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, N, d) -> post-softmax attention (B, branches, N)."""
        logits = self.score(self.value(h) * self.gate(h))
        return torch.softmax(logits.transpose(1, 2), dim=-1)


class CLAM(nn.Module):
    """CLAM_SB (`multi_branch=False`) or CLAM_MB, in_dim -> 512 -> gated attention (256).

    0.791 M parameters for in_dim 1024 and 2 classes (both variants), the paper's 0.79 M.
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        *,
        multi_branch: bool = False,
        hidden_dim: int = 512,
        attn_dim: int = 256,
        k_sample: int = 8,
        instance_loss: str = "svm",
        subtyping: bool = False,
        act: str = "relu",
        dropout: float = 0.25,
        mil_norm: str | None = "none",
        mil_bias: bool = True,
    ):
        super().__init__()
        check_choice("instance_loss", instance_loss, INSTANCE_LOSSES)
        self.multi_branch, self.k_sample = multi_branch, k_sample
        self.instance_loss, self.subtyping = instance_loss, subtyping
        self.embed = InstanceEmbedding(in_dim, hidden_dim, act, dropout, mil_norm, mil_bias)
        self.attention = GatedAttention(
            hidden_dim, attn_dim, n_classes if multi_branch else 1, dropout
        )
        use_ln = canonical_mil_norm(mil_norm) == "ln"
        self.norm = nn.LayerNorm(hidden_dim, bias=mil_bias) if use_ln else nn.Identity()
        # MB: row c of the weight is class c's Linear(512 -> 1) bag scorer.
        self.classifier = nn.Linear(hidden_dim, n_classes, bias=mil_bias)
        self.instance_classifiers = nn.ModuleList(
            nn.Linear(hidden_dim, 2) for _ in range(n_classes)
        )
        init_linears_xavier(self)

    def forward(
        self,
        x: torch.Tensor,
        coords: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> MILOutput:
        h = self.embed(as_bag_batch(x))  # (B, N, hidden)
        attention = self.attention(h)  # (B, branches, N)
        pooled = self.norm(attention @ h)  # (B, branches, hidden)
        if self.multi_branch:
            logits = (pooled * self.classifier.weight).sum(-1)
            if self.classifier.bias is not None:
                logits = logits + self.classifier.bias
        else:
            logits = self.classifier(pooled.squeeze(1))
        labels = training_labels(self, labels, h.shape[0])
        aux = None if labels is None else self._instance_loss(h, attention, labels)
        return MILOutput(logits, attention, pooled.flatten(1), aux)

    def _instance_loss(
        self, h: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        k = min(self.k_sample, h.shape[1])
        per_bag = []
        for bag, label in enumerate(labels.tolist()):
            bag_loss = h.new_zeros(())
            for cls, classifier in enumerate(self.instance_classifiers):
                if cls != label and not self.subtyping:
                    continue
                scores = attention[bag, cls if self.multi_branch else 0]
                top = torch.topk(scores, k).indices
                if cls == label:
                    bottom = torch.topk(-scores, k).indices
                    chosen = torch.cat([top, bottom])
                    targets = torch.cat([h.new_ones(k), h.new_zeros(k)]).long()
                else:
                    chosen, targets = top, h.new_zeros(k).long()
                bag_loss = bag_loss + self._pseudo_label_loss(classifier(h[bag, chosen]), targets)
            per_bag.append(
                bag_loss / len(self.instance_classifiers) if self.subtyping else bag_loss
            )
        return torch.stack(per_bag).mean()

    def _pseudo_label_loss(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.instance_loss == "svm":
            return smooth_top1_svm_loss(scores, targets)
        return F.cross_entropy(scores, targets)


@register_mil("clam_sb")
def clam_sb(in_dim: int, n_classes: int, **options) -> CLAM:
    return CLAM(in_dim, n_classes, multi_branch=False, **options)


@register_mil("clam_mb")
def clam_mb(in_dim: int, n_classes: int, **options) -> CLAM:
    return CLAM(in_dim, n_classes, multi_branch=True, **options)
