"""Figure ``umap_features``: UMAP of the same test-set patches embedded by offline encoders (one
panel per feature set, e.g. ImageNet R50 and a foundation model) and by the E2E-trained encoder
(an E2E run's fold-0 model.pt), side by side.

Patches are coloured by their true class: a patch whose slide's lesions (the dataset's
annotations, or the generator's masks) cover at least ``lesion_threshold`` of it is a lesion
patch, named by the annotation's class (PANDA's Gleason pattern) or, for unnamed lesions, by its
slide's class; any other is non-lesion tissue. Slides without annotation colour by their label,
and the title says how many. The
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

from abmilx.annotations import UNCLASSIFIED
from abmilx.report.figures.draw import Slides, finish, left_out_note, main

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
) -> np.ndarray | None:
    """The true class of each patch: its lesion class, or non-lesion tissue; None for a slide
    without annotation."""
    lesions = slides.lesions(slide_id)
    if lesions is None:
        return None
    names, share = lesions.patch_classes(coords, slides.footprint(slide_id))
    names = np.where(names == UNCLASSIFIED, f"lesion ({label})", names)
    return np.where(share >= threshold, names, NON_LESION).astype(object)


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


def feature_sets(settings: Mapping) -> list[str]:
    """The offline feature sets drawn, in panel order (``features``: one name or a list)."""
    names = settings["features"]
    return [names] if isinstance(names, str) else list(names)


def render(settings: Mapping, out: Path) -> Path:
    slides = Slides(settings)
    test = fold0_test_slides(settings["splits"])
    names = feature_sets(settings)
    folders = settings["features_dirs"]
    offline = [offline_features(Path(folder), test["slide_id"]) for folder in folders]
    present = [s for s in test["slide_id"] if all(s in found for found in offline)]
    encoder = TrainedEncoder(settings)
    store_coords = encoder.coords(present)
    frames = []
    unannotated = 0
    for slide_id, label in test.itertuples(index=False):
        if slide_id not in present:
            continue
        coords = offline[0][slide_id][1]
        # the first feature set's patches, found in the store and in the other feature sets by
        # their level-0 coordinates
        columns = {"slide_id": slide_id, "index": _positions(store_coords[slide_id], coords)}
        for number, found in enumerate(offline):
            rows = {(int(x), int(y)): i for i, (x, y) in enumerate(found[slide_id][1])}
            columns[f"row{number}"] = _positions(rows, coords)
        classes = patch_classes(slides, slide_id, label, coords, settings["lesion_threshold"])
        if classes is None:
            unannotated += 1
            classes = np.full(len(coords), label, dtype=object)
        frames.append(pd.DataFrame(columns | {"class": classes}))
    if not frames:
        raise ValueError(f"{', '.join(folders)}: no features of any test slide")
    patches = pd.concat(frames, ignore_index=True)
    found_everywhere = patches.filter(regex="^(index|row\\d+)$").ge(0).all(axis=1)
    patches = patches[found_everywhere].reset_index(drop=True)
    # sorted positions in slide-ordered rows: each slide's picks stay together, in one order
    picked = patches.iloc[
        balanced_subsample(patches["class"].to_numpy(), settings["max_patches"], settings["seed"])
    ].reset_index(drop=True)
    panels = [
        (
            f"offline encoder ({name})",
            np.concatenate(
                [
                    found[s][0][rows[f"row{number}"].to_numpy()]
                    for s, rows in picked.groupby("slide_id", sort=False)
                ]
            ),
        )
        for number, (name, found) in enumerate(zip(names, offline, strict=True))
    ]
    panels.append((f"E2E-trained encoder ({settings['runs'][0]['title']})", None))
    figure = Figure(figsize=(6 * len(panels), 5.2))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    classes = sorted(set(picked["class"]), key=lambda name: (name != NON_LESION, name))
    for axis, (title, features) in zip(axes, panels, strict=True):
        points = embed(encoder.features(picked) if features is None else features, settings)
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
    colouring = f"true patch class from {slides.lesion_source}"
    if unannotated:
        colouring += f"; {unannotated} of {len(frames)} slides without annotation: slide label"
    return finish(
        figure,
        settings,
        f"UMAP of {len(picked)} {settings['dataset']} test patches, coloured by {colouring}"
        f"{left_out_note(settings)}",
        out,
    )


def _positions(index: Mapping[tuple[int, int], int], coords: np.ndarray) -> np.ndarray:
    """Each coordinate's position in ``index``, -1 where it has none."""
    return np.array([index.get((int(x), int(y)), -1) for x, y in coords], dtype=np.int64)


if __name__ == "__main__":
    main(render, __doc__)
