"""Figure ``umap_features``: UMAP of the same test-set patches embedded by the offline encoder
(a feature set) and by the E2E-trained encoder (an E2E run's fold-0 model.pt), side by side.

Patches are coloured by their true class: for generated cohorts, a patch that the generator's
lesion mask covers (at least ``lesion_threshold`` of it) is a lesion patch of its slide's class,
any other a non-lesion tissue patch; cohorts without masks colour by the slide's label. The
patches are a deterministic subsample of at most ``max_patches`` (the same number per class where
the classes allow), so the figure stays cheap; the E2E encoder embeds only those, with the exact
preprocessing of its inference (eval size, channel order, normalisation, autocast).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from abmilx.report.figures.draw import Slides, finish, lesion_fraction, main

NON_LESION = "non-lesion tissue"


def fold0_test_slides(splits: str | Path) -> pd.DataFrame:
    """Fold 0's test slides (slide_id, label), sorted by slide id."""
    table = pd.read_csv(splits, dtype={"slide_id": str, "label": str})
    test = table[(table["fold"] == 0) & (table["split"] == "test")]
    return test.drop_duplicates("slide_id").sort_values("slide_id")[["slide_id", "label"]]


def offline_features(features_dir: Path, slide_ids) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{slide_id: (features (n, d) float32, coords (n, 2) int64)} of the slides that have a file."""
    import torch

    found = {}
    for slide_id in slide_ids:
        path = features_dir / f"{slide_id}.pt"
        if path.exists():
            stored = torch.load(path, map_location="cpu", weights_only=False)
            found[slide_id] = (
                stored["features"].float().numpy(),
                stored["coords"].numpy().astype(np.int64),
            )
    return found


def patch_classes(
    slides: Slides, slide_id: str, label: str, coords: np.ndarray, threshold: float
) -> np.ndarray:
    """The true class of each patch: lesion of the slide's class, non-lesion tissue, or (no
    masks) the slide's label."""
    truth = slides.truth(slide_id)
    if truth is None:
        return np.full(len(coords), label, dtype=object)
    lesion = lesion_fraction(truth, coords, slides.footprint(slide_id)) >= threshold
    return np.where(lesion, f"lesion ({label})", NON_LESION).astype(object)


def balanced_subsample(classes: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``cap`` items, an equal share per class where the classes
    have enough (a small class's leftover share goes to the others); deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    names = sorted(set(classes))
    order = {name: rng.permutation(np.flatnonzero(classes == name)) for name in names}
    chosen: list[np.ndarray] = []
    left = cap
    for position, name in enumerate(sorted(names, key=lambda n: len(order[n]))):
        share = left // (len(names) - position)
        picked = order[name][:share]
        chosen.append(picked)
        left -= len(picked)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, int)


class TrainedEncoder:
    """The encoder of an E2E run's fold-0 model.pt, with the preprocessing of its inference."""

    def __init__(self, settings: Mapping) -> None:
        from abmilx.kinds import load_trained
        from abmilx.patches.data import make_encode_fn

        run = Path(settings["runs"][0]["dir"]) / "fold0"
        task, model, _ = load_trained(run, settings["store"], device=settings["device"])
        model.eval()
        self.task = task
        self.scale = task.config.scales["main"]
        self.encode = make_encode_fn(
            model.encoder, task.device, task.amp_dtype, model.channels_last
        )

    def coords(self, slide_ids) -> dict[str, dict[tuple[int, int], int]]:
        """{slide_id: {(x, y): index of the patch in the store}} at the encoder's main scale."""
        return {
            slide_id: {
                (int(x), int(y)): i
                for i, (x, y) in enumerate(self.task.store.coords(slide_id, self.scale))
            }
            for slide_id in slide_ids
        }

    def features(self, picks: pd.DataFrame) -> np.ndarray:
        """Features of the picked patches (rows: slide_id, index; a slide's rows together)."""
        from abmilx.patches.data import resize_patches, to_chw_tensor

        config = self.task.config
        features = []
        for slide_id, rows in picks.groupby("slide_id", sort=False):
            patches = self.task.store.read(slide_id, self.scale, rows["index"].to_numpy())
            images = resize_patches(to_chw_tensor(patches, config.channel_order), config.eval_size)
            features.append(self.encode(images).float().cpu().numpy())
        return np.concatenate(features)


def embed(features: np.ndarray, settings: Mapping) -> np.ndarray:
    """2-D UMAP of standardised features (fixed random_state: deterministic, single-threaded)."""
    import umap

    mean, std = features.mean(axis=0), features.std(axis=0)
    scaled = (features - mean) / np.where(std > 0, std, 1.0)
    reducer = umap.UMAP(
        n_neighbors=min(settings["n_neighbors"], len(features) - 1),
        min_dist=settings["min_dist"],
        random_state=settings["seed"],
        n_epochs=200,
    )
    return reducer.fit_transform(scaled)


def render(settings: Mapping, out: Path) -> Path:
    slides = Slides(settings)
    test = fold0_test_slides(settings["splits"])
    offline = offline_features(Path(settings["features_dir"]), test["slide_id"])
    encoder = TrainedEncoder(settings)
    store_coords = encoder.coords(list(offline))
    frames = []
    for slide_id, label in test.itertuples(index=False):
        if slide_id not in offline:
            continue
        features, coords = offline[slide_id]
        # the feature file's patches, found in the store by their level-0 coordinates
        index = store_coords[slide_id].get
        positions = np.array([index((int(x), int(y)), -1) for x, y in coords])
        frames.append(
            pd.DataFrame(
                {
                    "slide_id": slide_id,
                    "index": positions,
                    "row": np.arange(len(coords)),
                    "class": patch_classes(
                        slides, slide_id, label, coords, settings["lesion_threshold"]
                    ),
                }
            )
        )
    if not frames:
        raise ValueError(f"{settings['features_dir']}: no features of any test slide")
    patches = pd.concat(frames, ignore_index=True)
    patches = patches[patches["index"] >= 0].reset_index(drop=True)
    # sorted positions in slide-ordered rows: each slide's picks stay together, in one order
    picked = patches.iloc[
        balanced_subsample(patches["class"].to_numpy(), settings["max_patches"], settings["seed"])
    ].reset_index(drop=True)
    before = np.concatenate(
        [
            offline[s][0][rows["row"].to_numpy()]
            for s, rows in picked.groupby("slide_id", sort=False)
        ]
    )
    after = encoder.features(picked)
    figure = Figure(figsize=(12, 5.2))
    axes = figure.subplots(1, 2)
    classes = sorted(set(picked["class"]), key=lambda name: (name != NON_LESION, name))
    titles = (
        f"offline encoder ({settings['features']})",
        f"E2E-trained encoder ({settings['runs'][0]['title']})",
    )
    for axis, features, title in zip(axes, (before, after), titles, strict=True):
        points = embed(features, settings)
        for colour, name in enumerate(classes):
            mask = (picked["class"] == name).to_numpy()
            axis.scatter(
                points[mask, 0],
                points[mask, 1],
                s=4 if name == NON_LESION else 7,
                color="0.7" if name == NON_LESION else f"C{colour}",
                label=f"{name} ({mask.sum()})",
                alpha=0.8,
                linewidths=0,
            )
        axis.set_title(title, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.legend(fontsize=8, markerscale=2.5, loc="best")
    return finish(
        figure,
        settings,
        f"UMAP of {len(picked)} {settings['dataset']} test patches, coloured by true patch class",
        out,
    )


if __name__ == "__main__":
    main(render, __doc__)
