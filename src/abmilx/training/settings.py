"""Training settings of every kind: one base for the shared fields, defaults only from the schema.

The dataclasses declare no defaults. `from_settings` validates the given keys against the
kind's `$defs/<kind>_settings` in src/abmilx/schemas/config.schema.yaml (the single source of
defaults and descriptions) and fills the rest from there, so code and schema cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Self

from abmilx.config import top_level_default, validate_settings
from abmilx.training.bags import TASKS

# Keys that the dataset and the top-level config decide (workflow/rules/common.smk adds them).
RUN_KEYS = ("seed", "task", "classes", "device")


def run_defaults() -> dict[str, Any]:
    """Defaults of the run-level keys: seed and device from the schema's top level."""
    return {
        "seed": top_level_default("seed"),
        "task": TASKS[0],
        "classes": None,
        "device": top_level_default("device"),
    }


@dataclass(kw_only=True)
class TrainSettings:
    """Fields every kind shares; a kind adds its own in a subclass and names its schema $def."""

    definition: ClassVar[str]

    seed: int
    task: str
    classes: list[str] | None
    device: str
    mil: str
    mil_kwargs: dict
    epochs: int
    warmup_epochs: int
    lr: float
    weight_decay: float
    optimizer: str
    selection: str
    aux_weight: float
    amp: str
    ema: float | None
    sync_bn: bool
    callbacks: dict
    protocol: str
    fold_seed_step: int
    early_stopping: dict

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Self:
        """Validate a settings mapping (run keys + the kind's schema keys) and fill defaults."""
        given = dict(settings)
        run = run_defaults()
        run.update({key: given.pop(key) for key in RUN_KEYS if key in given})
        return cls(**run, **validate_settings(cls.definition, given))

    @classmethod
    def from_checkpoint(cls, settings: Mapping[str, Any]) -> Self:
        """Settings stored in a model.pt; keys the code no longer knows are ignored."""
        known = {f.name for f in fields(cls)}
        return cls.from_settings({k: v for k, v in settings.items() if k in known})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
