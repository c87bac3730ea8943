"""End-to-end training of encoder + MIL from LMDB patches, and whole-slide prediction."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from abmilx.e2e.data import MrisBags, TrainCollate
from abmilx.e2e.model import E2EModel
from abmilx.features.data import iter_slide_features
from abmilx.features.extract import make_encode_fn
from abmilx.models import MILOutput, create_encoder, create_mil
from abmilx.tiling.store import PatchStore
from abmilx.training import (
    ModelEma,
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
    seed_worker,
    selection_metric,
    selection_metric_name,
)
from abmilx.training.bags import Bag, load_fold, selection_bags
from abmilx.training.devices import autocast, resolve_amp, resolve_device, set_threads
from abmilx.training.predictions import collect_predictions, group_slides, prediction_columns

log = logging.getLogger(__name__)


@dataclass
class E2ESettings:
    """Keyword settings of `train` (the config's E2E block); defaults = r18 BRCA subtyping."""

    encoder: str = "resnet18_layer3"
    encoder_weights: str = "imagenet"
    mil: str = "abmilx"
    mil_kwargs: dict = field(default_factory=dict)
    epochs: int = 75
    warmup_epochs: int = 10
    lr: float = 8e-5
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    batch_size: int = 3
    n_patches: int = 512
    scale_ratio: float | None = 4
    scales: dict = field(default_factory=lambda: {"main": "main", "low": "low"})
    train_size: int = 224
    eval_size: int = 224
    crop_scale: float = 0.25
    flips: bool = False
    aug_chunks: int = 0
    channel_order: str = "rgb"
    patch_batch_size: int = 512
    eval_patch_batch_size: int = 2048
    amp: str = "auto"
    channels_last: bool = True
    sync_bn: bool = True
    ema: float | None = None
    aux_weight: float = 1.0
    selection: str = "last"
    num_workers: int = 4
    seed: int = 2021
    task: str = "classification"
    classes: list[str] | None = None
    device: str = "auto"


def build_model(config: E2ESettings, n_classes: int, weights: str) -> E2EModel:
    encoder = create_encoder(config.encoder, weights=weights)
    mil = create_mil(config.mil, encoder.out_dim, n_classes, **config.mil_kwargs)
    return E2EModel(encoder, mil, config.patch_batch_size, config.channels_last)


def _available_slides(store: PatchStore, scale: str) -> set[str]:
    slides = store.meta["slides"]
    return {slide_id for slide_id, counts in slides.items() if counts.get(scale, 0) > 0}


def infer_bags(
    model: E2EModel,
    store_path: str | Path,
    bags: Sequence[Sequence[str]],
    *,
    scale: str,
    eval_size: int,
    chunk_size: int,
    channel_order: str,
    num_workers: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> Iterator[tuple[MILOutput, list[np.ndarray]]]:
    """MIL output of each bag (a list of slides) on ALL its patches, plus each slide's coords.

    Patches are encoded in chunks under no_grad, so only features of a whole slide are kept.
    """
    model.eval()
    encode = make_encode_fn(model.encoder, device, amp_dtype, model.channels_last)
    ordered = [slide_id for members in bags for slide_id in members]
    slides = iter_slide_features(
        store_path,
        ordered,
        encode,
        scale=scale,
        chunk_size=chunk_size,
        image_size=eval_size,
        channel_order=channel_order,
        num_workers=num_workers,
    )
    for members in bags:
        parts = [next(slides) for _ in members]
        features = torch.cat([features for _, features, _ in parts]).to(device)
        with torch.no_grad(), autocast(device, amp_dtype):
            output = model.mil(features.unsqueeze(0))
        yield output, [coords for _, _, coords in parts]


class _Distributed:
    """torchrun context: rank, world size and the local device (single process otherwise)."""

    def __init__(self, device_name: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if torch.cuda.is_available() and device_name != "cpu":
                torch.cuda.set_device(local_rank)
                self.device = torch.device("cuda", local_rank)
                dist.init_process_group("nccl")
            else:
                self.device = torch.device("cpu")
                dist.init_process_group("gloo")
        else:
            self.device = resolve_device(device_name)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sync_from_main(self, module: torch.nn.Module) -> None:
        """Copy rank 0's weights and buffers, so every rank validates the same model."""
        if self.world > 1:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def gather(self, values: list) -> list:
        """Concatenate per-rank lists in rank order (identity without DDP)."""
        if self.world == 1:
            return values
        gathered: list[list] = [[] for _ in range(self.world)]
        dist.all_gather_object(gathered, values)
        return [value for part in gathered for value in part]

    def close(self) -> None:
        if self.world > 1:
            dist.destroy_process_group()


def train(
    store: str | Path,
    splits: str | Path,
    fold: int,
    out_dir: str | Path,
    threads: int = 1,
    **settings,
) -> Path:
    """Train encoder + MIL on MRIS-sampled bags of the fold's train split; write model.pt.

    Validation (if the fold has a val split) encodes all main-scale patches of each val bag at
    eval_size. Resumes from `<out_dir>/.resume/`. Under torchrun (WORLD_SIZE > 1) it runs DDP
    and only rank 0 writes files.
    """
    config = E2ESettings(**settings)
    set_threads(threads)
    ddp = _Distributed(config.device)
    device = ddp.device
    seed_everything(config.seed)  # identical initial weights (and EMA copies) on every rank
    out_dir = Path(out_dir)
    patch_store = PatchStore(str(store))
    main_scale = config.scales["main"]
    bags, classes = load_fold(
        splits, fold, config.task, config.classes, _available_slides(patch_store, main_scale)
    )
    train_bags = bags.get("train", [])
    val_bags, loop_selection = selection_bags(bags, config.selection)
    if not train_bags:
        raise ValueError(f"fold {fold} of {splits} has no training slides with patches")
    model = build_model(config, len(classes), config.encoder_weights).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = ModelEma(model, config.ema) if config.ema else None
    wrapped: torch.nn.Module = model
    if ddp.world > 1:
        if config.sync_bn and device.type == "cuda":
            wrapped = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        wrapped = DistributedDataParallel(
            wrapped, device_ids=[device.index] if device.index is not None else None
        )
    optimizer = build_optimizer(
        model.parameters(), config.optimizer, config.lr, config.weight_decay
    )
    schedule = WarmupCosine(optimizer, config.lr, config.epochs, config.warmup_epochs)
    amp_dtype = resolve_amp(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    dataset = MrisBags(
        store,
        train_bags,
        config.n_patches,
        config.scale_ratio,
        config.scales,
        config.seed,
        config.channel_order,
    )
    collate = TrainCollate(config.train_size, config.crop_scale, config.flips, config.aug_chunks)
    drop_last = len(train_bags) >= config.batch_size * ddp.world
    # Different dropout draws per rank from here on, as the official seed_torch(seed + rank).
    seed_everything(config.seed + ddp.rank)

    def train_epoch(epoch: int) -> float:
        dataset.set_epoch(epoch)
        epoch_seed = config.seed * 100_003 + epoch
        # One permutation for every world size: G ranks with batch B see the slides that one
        # process with batch G*B sees in the same step.
        sampler = DistributedSampler(
            dataset,
            num_replicas=ddp.world,
            rank=ddp.rank,
            shuffle=True,
            seed=config.seed,
            drop_last=drop_last,
        )
        sampler.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.num_workers,
            collate_fn=collate,
            drop_last=drop_last,
            pin_memory=device.type == "cuda",
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(epoch_seed),
            prefetch_factor=3 if config.num_workers else None,
        )
        losses = []
        for batch in loader:
            images = batch["images"].to(device, non_blocking=True)
            label = batch["label"].to(device)
            with autocast(device, amp_dtype):
                output = wrapped(images, labels=label)
            loss = bag_loss(
                config.task, output, label, batch["event"].to(device), config.aux_weight
            )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model)
            losses.append(loss.item())
        return float(np.mean(losses))

    def validate(module: torch.nn.Module) -> float:
        ddp.sync_from_main(module)
        mine = val_bags[ddp.rank :: ddp.world]
        outputs = infer_bags(
            module,
            store,
            [bag.slide_ids for bag in mine],
            scale=main_scale,
            eval_size=config.eval_size,
            chunk_size=config.eval_patch_batch_size,
            channel_order=config.channel_order,
            num_workers=config.num_workers,
            device=device,
            amp_dtype=amp_dtype,
        )
        local = [
            (bag, output.logits.float().cpu().numpy()[0])
            for bag, (output, _) in zip(mine, outputs, strict=True)
        ]
        results: list[tuple[Bag, np.ndarray]] = ddp.gather(local)
        return selection_metric(
            config.task,
            np.stack([logits for _, logits in results]),
            np.array([bag.label for bag, _ in results]),
            np.array([bag.time for bag, _ in results]),
            np.array([bag.event for bag, _ in results]),
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
        metric_name=selection_metric_name(config.task, len(classes)),
        ema=ema,
        scaler=scaler,
        is_main=ddp.is_main,
    )
    cost = {
        "train_seconds": result.train_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "params": count_parameters(model),
    }
    if device.type == "cuda":
        cost["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if ddp.is_main:
        save_run(
            out_dir / "model.pt",
            kind="e2e",
            task=config.task,
            classes=classes,
            settings={**asdict(config), "fold": int(fold), "world_size": ddp.world},
            state_dict=result.state_dict,
            ema_state_dict=result.ema_state_dict,
            history=result.history,
            cost=cost,
            selection={**result.selection, "protocol": config.selection},
        )
        clear_resume(out_dir)
    ddp.close()
    return out_dir / "model.pt"


def predict(
    run: str | Path,
    store: str | Path,
    slide_ids: Sequence[str],
    threads: int = 1,
    *,
    case_ids: Sequence[str] | None = None,
    weights: str = "main",
    device: str = "auto",
    num_workers: int = 0,
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Logits and attention of each slide, encoding ALL its main-scale patches at eval_size.

    Same outputs as `abmilx.two_stage.predict` (see there, including `case_ids` pooling).
    `weights` is "main" or "ema" (the EMA teacher, when the run kept one).
    """
    set_threads(threads)
    torch_device = resolve_device(device)
    checkpoint = load_run(run)
    config = E2ESettings(
        **{k: v for k, v in checkpoint["settings"].items() if k in E2ESettings.__dataclass_fields__}
    )
    classes = checkpoint["classes"]
    state_key = {"main": "state_dict", "ema": "ema_state_dict"}[weights]
    if state_key not in checkpoint:
        raise ValueError(f"run {run} has no {weights} weights")
    model = build_model(config, len(classes), weights="random")
    model.load_state_dict(checkpoint[state_key])
    model.to(torch_device)
    patch_store = PatchStore(str(store))
    main_scale = config.scales["main"]
    groups = group_slides(slide_ids, case_ids, available=_available_slides(patch_store, main_scale))
    outputs = infer_bags(
        model,
        store,
        [members for _, members in groups],
        scale=main_scale,
        eval_size=config.eval_size,
        chunk_size=config.eval_patch_batch_size,
        channel_order=config.channel_order,
        num_workers=num_workers,
        device=torch_device,
        amp_dtype=resolve_amp(config.amp, torch_device),
    )
    rows, attention = [], {}
    for (case_id, members), (output, coords) in zip(groups, outputs, strict=True):
        logits = output.logits.float().cpu().numpy()[0]
        collect_predictions(rows, attention, case_id, members, coords, logits, output.attention)
    return pd.DataFrame(
        rows, columns=prediction_columns(len(classes), case_ids is not None)
    ), attention
