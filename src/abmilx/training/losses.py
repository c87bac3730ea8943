"""Training losses: cross-entropy and the discrete-time NLL survival loss (as the official code)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nll_survival_loss(
    logits: torch.Tensor,
    label: torch.Tensor,
    event: torch.Tensor,
    alpha: float = 0.0,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Negative log-likelihood of a discrete-time hazard model, averaged over the batch.

    h_k = sigmoid(logit_k), S_k = prod_{j<=k} (1 - h_j), S_{-1} = 1; with censorship c = 1 - event
    the loss is -(1-c)[log S_{y-1} + log h_y] - c log S_y, each log argument clamped at eps.
    alpha weights an extra uncensored-only term (0 in every official config).
    Computed in float32 whatever the autocast dtype of the logits.
    """
    logits = logits.float()
    label = label.long().view(-1, 1)
    censored = (1.0 - event.float()).view(-1, 1)
    hazards = torch.sigmoid(logits)
    survival = torch.cumprod(1.0 - hazards, dim=1)
    survival_padded = torch.cat([torch.ones_like(survival[:, :1]), survival], dim=1)
    s_before = survival_padded.gather(1, label).clamp(min=eps)
    h_at = hazards.gather(1, label).clamp(min=eps)
    s_at = survival_padded.gather(1, label + 1).clamp(min=eps)
    uncensored_loss = -(1.0 - censored) * (torch.log(s_before) + torch.log(h_at))
    censored_loss = -censored * torch.log(s_at)
    loss = (1.0 - alpha) * (censored_loss + uncensored_loss) + alpha * uncensored_loss
    return loss.mean()


def risk_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Risk score -sum_k S_k (negative expected survival over the bins): higher = earlier event."""
    survival = torch.cumprod(1.0 - torch.sigmoid(logits.float()), dim=1)
    return -survival.sum(dim=1)


def bag_loss(
    task: str,
    output,
    label: torch.Tensor,
    event: torch.Tensor | None,
    aux_weight: float,
) -> torch.Tensor:
    """Task loss of a MILOutput plus ``aux_weight`` times its instance-level loss, if any."""
    loss = task_loss(task, output.logits, label, event)
    if output.aux_loss is not None:
        loss = loss + aux_weight * output.aux_loss.float()
    return loss


def task_loss(
    task: str,
    logits: torch.Tensor,
    label: torch.Tensor,
    event: torch.Tensor | None = None,
) -> torch.Tensor:
    """Loss of a batch for `task` ("classification": cross-entropy; "survival": NLL)."""
    if task == "classification":
        return F.cross_entropy(logits.float(), label.long())
    if task == "survival":
        if event is None:
            raise ValueError("survival loss needs the event indicator")
        return nll_survival_loss(logits, label, event)
    raise ValueError(f"unknown task {task!r}")
