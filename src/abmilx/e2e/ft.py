"""FT, task-specific fine-tuning via a variational information bottleneck (Li et al., CVPR 2023).

Procedure (as the ABMILX paper's Table 4 runs it with a ResNet-50):
1. VIB stage, once, at the start of training: every training bag's main-scale patches are
   encoded by the initial, frozen encoder; a mask network (Linear-ReLU-Linear) gives each patch
   a Bernoulli keep logit. For `vib_epochs` epochs over the bags (one bag per step, Adam at
   `vib_lr`) a mask is drawn by Monte Carlo with the relaxed Bernoulli (Gumbel-sigmoid at
   `vib_temperature`, straight-through: hard 0/1 forward, relaxed gradient), the MIL (`mil`)
   classifies the masked features, and the loss is the task loss plus `vib_beta` times the
   mean over patches of KL(Bernoulli(p_i) || Bernoulli(`keep_prior`)), the sparse prior.
   The learnt keep probabilities p_i of every patch are kept (and saved in the resume state).
2. End-to-end fine-tuning: every step draws a fresh Monte Carlo mask m_i ~ Bernoulli(p_i) per
   bag and reads `n_patches` patches uniformly from the kept ones (all of them plus duplicates
   when fewer are kept; the most probable patch when none is), so the encoder sees only the
   sampled sparse subset; encoder + MIL are trained with the bag loss.
3. Inference runs the MIL on every main-scale patch (as the E2E kind).

Choices the public descriptions leave open, with the value taken here (schema defaults):
- keep_prior 0.1, vib_beta 1, vib_temperature 0.5, vib_epochs 20, vib_lr 1e-4, mask network
  hidden width 128; the VIB's MIL is a fresh model of the run's `mil` type, discarded after
  the stage (only the masks carry over); masked-out features are zeroed, not removed.
- The original fine-tunes the backbone with slide labels on the selected patches and then
  retrains the MIL on re-extracted features; here, as the issue asks, encoder and MIL are
  fine-tuned jointly on the sampled kept patches, one stage, with the engine's schedule.
- The VIB features use the evaluation view (`eval_size`, no augmentation); a survival case's
  slides are pooled into one bag; an oversampled bag is encoded once and repeated in the VIB
  epochs as in training. The VIB runs on the CPU, on the features of every training bag held
  in memory (as the original's offline features), whatever the run's device. The VIB stage counts as training time, its patches as
  `patches_scored` (cost).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from abmilx.e2e.sampling import sample_indices
from abmilx.e2e.train import PatchSettings, PatchTask
from abmilx.models import call_mil, create_mil
from abmilx.training.bags import Bag
from abmilx.training.losses import task_loss


@dataclass(kw_only=True)
class FTSettings(PatchSettings):
    """Settings of an FT run (schema `$defs/ft_settings`)."""

    definition: ClassVar[str] = "ft_settings"

    n_patches: int
    keep_prior: float
    vib_epochs: int
    vib_lr: float
    vib_beta: float
    vib_temperature: float


def bernoulli_kl(p: torch.Tensor, prior: float, eps: float = 1e-6) -> torch.Tensor:
    """Mean over elements of KL(Bernoulli(p) || Bernoulli(prior))."""
    p = p.clamp(eps, 1 - eps)
    kl = p * torch.log(p / prior) + (1 - p) * torch.log((1 - p) / (1 - prior))
    return kl.mean()


def relaxed_bernoulli(
    logits: torch.Tensor, temperature: float, generator: torch.Generator
) -> torch.Tensor:
    """Straight-through Monte Carlo mask: hard 0/1 values, gradient of the Gumbel-sigmoid."""
    u = torch.rand(logits.shape, generator=generator).clamp(1e-6, 1 - 1e-6)
    soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / temperature)
    hard = (soft > 0.5).to(soft.dtype)
    return hard + soft - soft.detach()


class VIB(nn.Module):
    """Mask network over frozen patch features plus the MIL that reads the masked bag."""

    def __init__(self, in_dim: int, n_classes: int, mil: str, mil_kwargs: dict) -> None:
        super().__init__()
        self.mask = nn.Sequential(nn.Linear(in_dim, 128), nn.ReLU(), nn.Linear(128, 1))
        self.mil = create_mil(mil, in_dim, n_classes, **mil_kwargs)

    def keep_logits(self, features: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N,) Bernoulli keep logits."""
        return self.mask(features).squeeze(-1)


def train_vib(
    features: Sequence[torch.Tensor],
    bags: Sequence[Bag],
    n_classes: int,
    config: FTSettings,
) -> list[np.ndarray]:
    """Train the VIB on frozen features (one (N, d) tensor per bag); keep probabilities per bag."""
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng():  # the VIB's init and dropout leave the run's RNG untouched
        torch.manual_seed(config.seed)
        vib = VIB(features[0].shape[1], n_classes, config.mil, config.mil_kwargs)
        optimizer = torch.optim.Adam(vib.parameters(), lr=config.vib_lr)
        vib.train()
        for _ in range(config.vib_epochs):
            for index in torch.randperm(len(bags), generator=generator).tolist():
                bag, bag_features = bags[index], features[index]
                logits = vib.keep_logits(bag_features)
                mask = relaxed_bernoulli(logits, config.vib_temperature, generator)
                output = call_mil(vib.mil, (bag_features * mask[:, None]).unsqueeze(0))
                loss = task_loss(
                    config.task,
                    output.logits,
                    torch.tensor([bag.label]),
                    torch.tensor([float(bag.event)]),
                )
                loss = loss + config.vib_beta * bernoulli_kl(
                    torch.sigmoid(logits), config.keep_prior
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            return [torch.sigmoid(vib.keep_logits(f)).numpy() for f in features]


class MaskPicker:
    """Draws a Monte Carlo mask from the keep probabilities and `n_patches` of the kept."""

    def __init__(self, keep: list[np.ndarray], n_patches: int) -> None:
        self.keep = keep
        self.n_patches = n_patches

    def kept(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """Pooled indices of the patches the sampled mask keeps (never empty)."""
        probability = self.keep[index]
        kept = np.flatnonzero(rng.random(len(probability)) < probability)
        return kept if len(kept) else np.array([int(np.argmax(probability))])

    def __call__(self, index: int, rng: np.random.Generator) -> np.ndarray:
        kept = self.kept(index, rng)
        return kept[sample_indices(len(kept), self.n_patches, rng)]


class FTTask(PatchTask):
    """Bags are the VIB-kept patches of the patch store, sampled afresh every step."""

    kind = "ft"
    settings_type = FTSettings

    def __init__(self, source, config, device, amp_dtype, num_workers=None) -> None:
        super().__init__(source, config, device, amp_dtype, num_workers)
        self.keep: list[np.ndarray] | None = None
        self.n_classes = 0

    def build_model(self, n_classes: int, *, pretrained: bool) -> nn.Module:
        self.n_classes = n_classes
        return super().build_model(n_classes, pretrained=pretrained)

    def fit_masks(self, bags: Sequence[Bag]) -> None:
        """The VIB stage on the current (initial) encoder's features of the training bags."""
        features = dict(self.distinct_bag_features(bags))  # repeated bags share a tensor
        per_bag = [features[bag.slide_ids] for bag in bags]
        self.keep = train_vib(per_bag, bags, self.n_classes, self.config)

    def batches(self, bags: Sequence[Bag], epoch: int, steps: list[list[int]]) -> Iterator[dict]:
        config = self.config
        if self.keep is None:
            self.fit_masks(bags)
        return self.load_picked(bags, MaskPicker(self.keep, config.n_patches), epoch, steps)

    def state_dict(self) -> dict[str, Any]:
        return {"keep": self.keep}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.keep = state["keep"]
