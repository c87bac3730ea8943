"""Features computed elsewhere: CLAM and TRIDENT HDF5 files as a feature set (`source: h5`).

A lab that already ran CLAM or TRIDENT holds one HDF5 file per slide with a `features` dataset
(n x d; some CLAM versions keep a leading batch axis of 1) and a `coords` dataset (n x 2, the
level-0 top-left corner of each patch). What the patches were cut at is recorded on `coords`:

- TRIDENT: `patch_size` (pixels at the target magnification) and `patch_size_level0`;
- CLAM's patch files (`create_patches_fp.py`, `patches/<slide>.h5`): `patch_size` (pixels at
  `patch_level`) and `downsample` (that level's downsample). CLAM's feature files
  (`h5_files/<slide>.h5`) carry no attributes, so the patch files are read beside them
  (`h5_coords_dir`), and their coords must be the feature file's.

The files are checked like our own features before anything is written (every slide that
passed tiling QC has a file; shapes agree; the patches cover what the feature set's scale
covers), then converted into `<slide_id>.pt` records of the layout
`abmilx.features.extract` writes, so two-stage training and evaluation read them unchanged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

log = logging.getLogger(__name__)

MPP_TOLERANCE = 0.1
"""Relative difference allowed between the files' patch footprint in µm and the scale's (the
tolerance with which tiling picks a pyramid level). The footprint, not the pixel count, is
compared: CLAM's 512 px patches of a 40x level cover what 256 px at 20x cover, and encoders
resize either to their input size."""


class H5FeatureError(ValueError):
    """A feature file that cannot stand in for our features; the message names the file."""


@dataclass(frozen=True)
class H5Slide:
    """One slide's feature file and what its metadata says, checked before reading the data."""

    slide_id: str
    path: Path
    count: int
    dim: int


def _squeeze_batch(shape: tuple[int, ...]) -> tuple[int, ...]:
    """(1, n, k) -> (n, k): the leading batch axis some CLAM versions save."""
    return shape[1:] if len(shape) == 3 and shape[0] == 1 else shape


def _geometry(attrs, where: Path) -> tuple[float, float] | None:
    """(patch size in pixels at the patching resolution, patch footprint in level-0 pixels)
    from TRIDENT's or CLAM's `coords` attributes, or None when they record neither."""
    if "patch_size" not in attrs:
        return None
    pixels = float(np.asarray(attrs["patch_size"]).reshape(-1)[0])
    if "patch_size_level0" in attrs:  # TRIDENT
        return pixels, float(np.asarray(attrs["patch_size_level0"]).reshape(-1)[0])
    if "downsample" in attrs:  # CLAM: (x, y) downsample of patch_level
        downsample = np.asarray(attrs["downsample"], dtype=float).reshape(-1)
        if downsample.size and not np.allclose(downsample, downsample[0]):
            raise H5FeatureError(
                f"{where}: coords downsample {downsample.tolist()} differs in x, y"
            )
        return pixels, pixels * float(downsample[0])
    return None


def _dataset(handle: h5py.File, name: str, path: Path) -> h5py.Dataset:
    if name not in handle or not isinstance(handle[name], h5py.Dataset):
        raise H5FeatureError(f"{path}: no '{name}' dataset (has: {', '.join(handle) or 'none'})")
    return handle[name]


def _read_coords(handle: h5py.File, path: Path) -> np.ndarray:
    coords = _dataset(handle, "coords", path)[()]
    coords = coords.reshape(_squeeze_batch(coords.shape))
    return np.asarray(coords, dtype=np.int64)


def inspect_slide(
    slide_id: str,
    path: Path,
    coords_path: Path | None,
    slide_mpp: float,
    scale_mpp: float,
    patch_size: int,
) -> H5Slide:
    """Check one file's shapes and patch footprint against the feature set's scale."""
    with h5py.File(path, "r") as handle:
        features = _dataset(handle, "features", path)
        shape = _squeeze_batch(features.shape)
        coords_shape = _squeeze_batch(_dataset(handle, "coords", path).shape)
        if len(shape) != 2 or shape[0] == 0:
            raise H5FeatureError(
                f"{path}: features have shape {features.shape}, expected (patches, dim) with at "
                "least one patch"
            )
        if coords_shape != (shape[0], 2):
            raise H5FeatureError(
                f"{path}: coords have shape {coords_shape} but features {shape}: expected "
                f"({shape[0]}, 2), one level-0 (x, y) per feature row"
            )
        geometry = _geometry(handle["coords"].attrs, path)
        coords = _read_coords(handle, path) if coords_path is not None else None
    source = path
    if geometry is None and coords_path is not None:
        if not coords_path.is_file():
            raise H5FeatureError(f"{coords_path}: patch coordinates file of {path} does not exist")
        with h5py.File(coords_path, "r") as handle:
            geometry = _geometry(_dataset(handle, "coords", coords_path).attrs, coords_path)
            if not np.array_equal(_read_coords(handle, coords_path), coords):
                raise H5FeatureError(
                    f"{coords_path}: its coords are not those of the feature file {path}"
                )
        source = coords_path
    if geometry is None:
        raise H5FeatureError(
            f"{source}: coords record no patch size (attributes patch_size with "
            "patch_size_level0 (TRIDENT) or downsample (CLAM patch files)); for CLAM feature "
            "files set h5_coords_dir to the folder of create_patches_fp's patches/<slide>.h5"
        )
    pixels, level0 = geometry
    footprint, expected = level0 * slide_mpp, patch_size * scale_mpp
    if abs(footprint - expected) > MPP_TOLERANCE * expected:
        raise H5FeatureError(
            f"{source}: patches cover {footprint:g} µm ({pixels:g} px, {level0:g} level-0 px "
            f"of a {slide_mpp:g} µm/px slide), the feature set's scale {expected:g} µm "
            f"(tiling patch_size {patch_size} px at {scale_mpp:g} µm/px)"
        )
    return H5Slide(slide_id, path, shape[0], shape[1])


def read_slide_features(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 (n, d), coords int64 (n, 2)) of one HDF5 feature file."""
    path = Path(path)
    with h5py.File(path, "r") as handle:
        features = _dataset(handle, "features", path)[()]
        features = np.asarray(features.reshape(_squeeze_batch(features.shape)), dtype=np.float32)
        return features, _read_coords(handle, path)


def qc_slides(qc_dir: str | Path) -> dict[str, float]:
    """Level-0 µm/px of each slide whose tiling QC record (`<slide_id>.json`) says ok."""
    slides = {}
    for path in sorted(Path(qc_dir).glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("status") == "ok":
            slides[path.stem] = float(record["mpp"])
    return slides


def import_h5(
    out_dir: str | Path,
    *,
    qc_dir: str | Path,
    h5_dir: str,
    h5_pattern: str,
    h5_coords_dir: str | None,
    scale: str,
    mpp: float,
    patch_size: int,
    encoder: str,
) -> dict[str, int]:
    """Check every QC-passed slide's HDF5 file, then write `<out_dir>/<slide_id>.pt` for each.

    `mpp` and `patch_size` are the feature set's scale (tiling/scales/<scale>, tiling/
    patch_size); `encoder` is recorded as the config names it. Raises H5FeatureError naming
    the files that are missing or do not fit, before writing anything.
    """
    slides = qc_slides(qc_dir)
    if not slides:
        raise H5FeatureError(f"{qc_dir}: no slide passed tiling QC")
    files = {s: Path(h5_dir) / h5_pattern.format(slide_id=s) for s in slides}
    missing = sorted(s for s, path in files.items() if not path.is_file())
    if missing:
        shown = ", ".join(f"{s} ({files[s]})" for s in missing[:10])
        raise H5FeatureError(
            f"{len(missing)} of {len(slides)} slides have no feature file in {h5_dir} "
            f"(pattern {h5_pattern!r}): {shown}"
        )
    coords_dir = Path(h5_coords_dir) if h5_coords_dir else None
    checked = [
        inspect_slide(
            s,
            files[s],
            coords_dir / h5_pattern.format(slide_id=s) if coords_dir else None,
            slides[s],
            mpp,
            patch_size,
        )
        for s in slides
    ]
    dims = {slide.dim for slide in checked}
    if len(dims) > 1:
        by_dim = {d: next(x.path for x in checked if x.dim == d) for d in sorted(dims)}
        raise H5FeatureError(
            "feature files differ in dimension: "
            + ", ".join(f"{d} ({path})" for d, path in by_dim.items())
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for slide in checked:
        features, coords = read_slide_features(slide.path)
        record = {
            "features": torch.from_numpy(features),
            "coords": torch.from_numpy(coords),
            "encoder": encoder,
            "source": "h5",
            "h5_file": str(slide.path),
            "scale": scale,
            "mpp": mpp,
        }
        torch.save(record, out_dir / f"{slide.slide_id}.pt")
    patches = sum(slide.count for slide in checked)
    log.info("imported %d slides, %d patches of dimension %d", len(checked), patches, *dims)
    return {"slides": len(checked), "patches": patches, "dim": dims.pop()}
