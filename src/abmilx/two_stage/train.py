"""Two-stage MIL: train an aggregator on offline patch features (batch 1, full bag)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from abmilx.models import call_mil, create_mil
from abmilx.training import (
    WarmupCosine,
    bag_loss,
    build_optimizer,
    clear_resume,
    count_parameters,
    fit,
    load_run,
    peak_rss_mb,
    save_run,
    seed_everything,
    selection_metric,
    selection_metric_name,
)
from abmilx.training.bags import Bag, load_fold, selection_bags
from abmilx.training.devices import resolve_device, set_threads
from abmilx.training.predictions import collect_predictions, group_slides, prediction_columns

log = logging.getLogger(__name__)


@dataclass
class TwoStageSettings:
    """Keyword settings of `train` (the config's two-stage block)."""

    mil: str = "abmil"
    mil_kwargs: dict = field(default_factory=dict)
    epochs: int = 75
    warmup_epochs: int = 0
    lr: float = 2e-4
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    seed: int = 2021
    selection: str = "last"
    task: str = "classification"
    classes: list[str] | None = None
    device: str = "auto"
    aux_weight: float = 1.0


class FeatureBank:
    """Feature files of one directory, read on demand (a dataset may not fit in memory)."""

    def __init__(self, features_dir: str | Path) -> None:
        self.features_dir = Path(features_dir)
        self.paths = {path.stem: path for path in sorted(self.features_dir.glob("*.pt"))}
        if not self.paths:
            raise FileNotFoundError(f"no feature files (*.pt) in {self.features_dir}")

    def load(self, slide_id: str) -> dict:
        return torch.load(self.paths[slide_id], map_location="cpu", weights_only=False)

    def bag(self, slide_ids: Sequence[str]) -> tuple[torch.Tensor, list[np.ndarray]]:
        """(N, d) features of the slides concatenated, and each slide's coords."""
        records = [self.load(slide_id) for slide_id in slide_ids]
        features = torch.cat([record["features"].float() for record in records])
        return features, [np.asarray(record["coords"], dtype=np.int64) for record in records]

    def in_dim(self) -> int:
        return int(self.load(next(iter(self.paths)))["features"].shape[1])


@torch.no_grad()
def _bag_logits(model, bank: FeatureBank, bags: list[Bag], device) -> np.ndarray:
    model.eval()
    logits = [
        model(bank.bag(bag.slide_ids)[0].unsqueeze(0).to(device)).logits.float().cpu()
        for bag in bags
    ]
    return torch.cat(logits).numpy()


def train(
    features_dir: str | Path,
    splits: str | Path,
    fold: int,
    out_dir: str | Path,
    threads: int = 1,
    **settings,
) -> Path:
    """Train on the fold's train split, select per `selection`, write model.pt and train_log.csv.

    Resumes from `<out_dir>/.resume/` when an earlier attempt was interrupted.
    """
    config = TwoStageSettings(**settings)
    set_threads(threads)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    out_dir = Path(out_dir)
    bank = FeatureBank(features_dir)
    bags, classes = load_fold(splits, fold, config.task, config.classes, available=bank.paths)
    train_bags = bags.get("train", [])
    val_bags, loop_selection = selection_bags(bags, config.selection)
    if not train_bags:
        raise ValueError(f"fold {fold} of {splits} has no training slides with features")
    model = create_mil(config.mil, bank.in_dim(), len(classes), **config.mil_kwargs).to(device)
    optimizer = build_optimizer(
        model.parameters(), config.optimizer, config.lr, config.weight_decay
    )
    schedule = WarmupCosine(optimizer, config.lr, config.epochs, config.warmup_epochs)
    metric_name = selection_metric_name(config.task, len(classes))

    def train_epoch(epoch: int) -> float:
        order = torch.randperm(
            len(train_bags), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        )
        losses = []
        for index in order.tolist():
            bag = train_bags[index]
            features = bank.bag(bag.slide_ids)[0].unsqueeze(0).to(device)
            label = torch.tensor([bag.label], device=device)
            output = call_mil(model, features, labels=label)
            loss = bag_loss(
                config.task,
                output,
                label,
                torch.tensor([bag.event], device=device),
                config.aux_weight,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return float(np.mean(losses))

    def validate(module: torch.nn.Module) -> float:
        logits = _bag_logits(module, bank, val_bags, device)
        return selection_metric(
            config.task,
            logits,
            np.array([bag.label for bag in val_bags]),
            np.array([bag.time for bag in val_bags]),
            np.array([bag.event for bag in val_bags]),
        )

    result = fit(
        out_dir=out_dir,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        epochs=config.epochs,
        train_epoch=train_epoch,
        validate=validate if val_bags else None,
        selection=loop_selection,
        metric_name=metric_name,
    )
    save_run(
        out_dir / "model.pt",
        kind="two_stage",
        task=config.task,
        classes=classes,
        settings={**asdict(config), "in_dim": bank.in_dim(), "fold": int(fold)},
        state_dict=result.state_dict,
        history=result.history,
        cost={
            "train_seconds": result.train_seconds,
            "peak_rss_mb": peak_rss_mb(),
            "params": count_parameters(model),
        },
        selection={**result.selection, "protocol": config.selection},
    )
    clear_resume(out_dir)
    return out_dir / "model.pt"


def predict(
    run: str | Path,
    features_dir: str | Path,
    slide_ids: Sequence[str],
    threads: int = 1,
    *,
    case_ids: Sequence[str] | None = None,
    device: str = "auto",
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Logits per slide and attention with coords, from a run directory or model.pt.

    Returns a DataFrame with `slide_id`, `logit_0..logit_{C-1}` (and `case_id` when given) and
    {slide_id: {"coords": (n, 2) int64, "attention": (H, n) float32}}. With `case_ids` (one per
    slide) the slides of a case form one bag, as in survival training: every slide of the case
    gets the case's logits and its own slice of the case's attention. Slides without a feature
    file are skipped with a warning; models without attention give no attention entry.
    """
    set_threads(threads)
    torch_device = resolve_device(device)
    checkpoint = load_run(run)
    settings = checkpoint["settings"]
    classes = checkpoint["classes"]
    model = create_mil(
        settings["mil"], settings["in_dim"], len(classes), **settings.get("mil_kwargs", {})
    )
    model.load_state_dict(checkpoint["state_dict"])
    model.to(torch_device).eval()
    bank = FeatureBank(features_dir)
    groups = group_slides(slide_ids, case_ids, available=bank.paths)
    rows, attention = [], {}
    with torch.no_grad():
        for case_id, members in groups:
            features, coords = bank.bag(members)
            output = model(features.unsqueeze(0).to(torch_device))
            logits = output.logits.float().cpu().numpy()[0]
            collect_predictions(rows, attention, case_id, members, coords, logits, output.attention)
    frame = pd.DataFrame(rows, columns=prediction_columns(len(classes), case_ids is not None))
    return frame, attention
