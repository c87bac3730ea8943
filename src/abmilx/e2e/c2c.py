"""C2C, Cluster-to-Conquer (Sharma et al., MIDL 2021): the clustering-sampling E2E baseline.

Procedure (paper §3, as the ABMILX paper's Table 4 runs it with a ResNet-18):
1. Every `recluster_every` epochs (and at epoch 0) each training bag's main-scale patches are
   encoded by the CURRENT encoder (eval mode, no gradient) and split by k-means into
   `n_clusters` clusters (scikit-learn `KMeans`, seeded by (seed, epoch, bag)).
2. Every step reads `per_cluster` patches from each cluster of the bag (uniform without
   replacement; a smaller cluster is padded with duplicates), laid out cluster-major, so the
   bag has n_clusters * per_cluster patches and position j belongs to cluster j // per_cluster.
3. Encoder + attention MIL (`mil`, ABMIL by default) are trained with the bag loss plus
   `aux_weight` * (instance loss + `kl_weight` * KL): the instance loss is the cross-entropy of
   a linear patch classifier against the slide label (classification only; survival runs have
   none), the KL term is KL(a || U) between the attention mass a_c of each cluster (the sum of
   the attention of its patches, averaged over heads) and the uniform distribution U over
   clusters, so it is zero exactly when every cluster gets the same attention.
4. Inference runs the MIL on every main-scale patch (as the E2E kind).

Choices the public descriptions leave open, with the value taken here (schema defaults):
- k = 8 clusters and k' = 8 patches per cluster (64 patches per slide per step), as the
  original code's defaults; re-clustering every epoch; KL weight 0.01, instance weight 1.
- Clusters are computed on the features of the evaluation view (`eval_size` resize, no
  augmentation), with KMeans n_init=1 (k-means++); a bag with fewer patches than clusters has
  one cluster per patch and reuses clusters cyclically to fill its k slots; a survival case's
  slides are pooled and clustered together.
- Re-clustering time counts as training time and its patches as `patches_scored` (cost).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from torch import nn

from abmilx.e2e.model import E2EModel
from abmilx.e2e.sampling import sample_indices
from abmilx.e2e.train import PatchSettings, PatchTask
from abmilx.models import MILOutput, call_mil
from abmilx.training.bags import Bag


@dataclass(kw_only=True)
class C2CSettings(PatchSettings):
    """Settings of a C2C run (schema `$defs/c2c_settings`)."""

    definition: ClassVar[str] = "c2c_settings"

    n_clusters: int
    per_cluster: int
    recluster_every: int
    kl_weight: float


def cluster_kl(attention: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """KL(a || uniform) of the clusters' attention mass, averaged over bags and heads.

    `attention` is (B, H, N) with N = n_clusters * per_cluster laid out cluster-major.
    """
    batch, heads, n = attention.shape
    mass = attention.float().reshape(batch, heads, n_clusters, n // n_clusters).sum(-1)
    mass = mass / mass.sum(-1, keepdim=True)
    return (mass * torch.log(mass.clamp_min(1e-12) * n_clusters)).sum(-1).mean()


class C2CModel(E2EModel):
    """E2EModel plus C2C's patch classifier and cluster-attention KL, returned as `aux_loss`."""

    def __init__(
        self,
        encoder: nn.Module,
        mil: nn.Module,
        n_classes: int,
        n_clusters: int,
        kl_weight: float,
        patch_batch_size: int,
        channels_last: bool,
        instance_loss: bool = True,
    ) -> None:
        super().__init__(encoder, mil, patch_batch_size, channels_last)
        # survival has no instance labels, and DDP refuses parameters without gradient
        self.instance_head = nn.Linear(encoder.out_dim, n_classes) if instance_loss else None
        self.n_clusters = n_clusters
        self.kl_weight = kl_weight

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> MILOutput:
        batch, n_patches = images.shape[:2]
        features = self.encode(images.flatten(0, 1)).view(batch, n_patches, -1)
        output = call_mil(self.mil, features, labels=labels)
        if labels is None or not self.training:
            return output
        if output.attention is None:
            raise ValueError("C2C needs a MIL model with attention (e.g. abmil)")
        aux = self.kl_weight * cluster_kl(output.attention, self.n_clusters)
        if self.instance_head is not None:
            patch_logits = self.instance_head(features).flatten(0, 1).float()
            aux = aux + F.cross_entropy(patch_logits, labels.repeat_interleave(n_patches))
        if output.aux_loss is not None:
            aux = aux + output.aux_loss
        return output._replace(aux_loss=aux)


class ClusterPicker:
    """Picks `per_cluster` pooled indices from each cluster slot of a bag, cluster-major."""

    def __init__(self, clusters: list[list[np.ndarray]], n_clusters: int, per_cluster: int):
        self.clusters = clusters
        self.n_clusters = n_clusters
        self.per_cluster = per_cluster

    def __call__(self, index: int, rng: np.random.Generator) -> np.ndarray:
        groups = self.clusters[index]
        slots = [groups[slot % len(groups)] for slot in range(self.n_clusters)]
        return np.concatenate(
            [group[sample_indices(len(group), self.per_cluster, rng)] for group in slots]
        )


def kmeans_groups(features: np.ndarray, n_clusters: int, seed: int) -> list[np.ndarray]:
    """Indices of each non-empty k-means cluster of `features` (n, d), clusters in label order."""
    n = len(features)
    if n <= n_clusters:
        return [np.array([i]) for i in range(n)]
    labels = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed).fit_predict(features)
    groups = [np.flatnonzero(labels == c) for c in range(n_clusters)]
    return [group for group in groups if len(group)]


class C2CTask(PatchTask):
    """Cluster-sampled bags from the patch store; re-clustered with the current encoder."""

    kind = "c2c"
    settings_type = C2CSettings

    def __init__(self, source, config, device, amp_dtype, num_workers=None) -> None:
        super().__init__(source, config, device, amp_dtype, num_workers)
        self.clusters: list[list[np.ndarray]] | None = None
        self.clustered_at: list[int] = []  # epochs at which the bags were (re)clustered

    def wrap(self, encoder: nn.Module, mil: nn.Module, n_classes: int) -> C2CModel:
        config = self.config
        return C2CModel(
            encoder,
            mil,
            n_classes,
            config.n_clusters,
            config.kl_weight,
            config.patch_batch_size,
            config.channels_last,
            instance_loss=config.task == "classification",
        )

    def recluster(self, bags: Sequence[Bag], epoch: int) -> None:
        """k-means of every bag's patches on the current encoder's features."""
        clusters = {}
        for index, (slide_ids, features) in enumerate(self.distinct_bag_features(bags)):
            seed = int(np.random.default_rng([self.config.seed, epoch, index]).integers(2**31))
            clusters[slide_ids] = kmeans_groups(features.numpy(), self.config.n_clusters, seed)
        self.clusters = [clusters[bag.slide_ids] for bag in bags]
        self.clustered_at.append(epoch)

    def batches(self, bags: Sequence[Bag], epoch: int, steps: list[list[int]]) -> Iterator[dict]:
        config = self.config
        due = epoch % config.recluster_every == 0 and epoch not in self.clustered_at
        if self.clusters is None or due:
            self.recluster(bags, epoch)
        return self.load_picked(
            bags, ClusterPicker(self.clusters, config.n_clusters, config.per_cluster), epoch, steps
        )

    def state_dict(self) -> dict[str, Any]:
        return {"clusters": self.clusters, "clustered_at": list(self.clustered_at)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clusters = state["clusters"]
        self.clustered_at = list(state["clustered_at"])
