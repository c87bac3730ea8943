"""LMDB patch store: per-slide writer, dataset packer and a lazy, fork-safe reader.

Layout (docs/architecture.md, "Patch store"): one single-file LMDB (``subdir=False``) whose
values are JPEG bytes.

- ``__meta__`` -> JSON ``{"format": "abmilx-patches", "format_version": 1, "code_version",
  "patch_size", "jpeg_quality", "jpeg_subsampling", "scales": {name: {"mpp": float}},
  "slides": {slide_id: {scale: count}}, "extent_level0": {slide_id: {scale: float | null}},
  "slide_mpp": {slide_id: float | null}}``. ``extent_level0`` is the patch footprint in
  level-0 pixels (``patch_size * scale_mpp / slide_mpp``), so coordinates and footprint
  together locate every patch on the slide without guessing.
- ``<slide_id>/<scale>/coords`` -> little-endian int64 ``(n, 2)`` array of level-0 ``(x, y)``
  top-left corners.
- ``<slide_id>/<scale>/<index:07d>`` -> JPEG bytes of patch ``index`` (RGB, ``patch_size`` px).

The store holds one view per patch, ``patch_size`` pixels square. Training views (random
resized crops) and evaluation views (a resize, e.g. to 224 px) are made by the training code
from these pixels; unlike the official code there are no separate 224/256 stores.

LMDB environments are not fork-safe, so :class:`PatchStore` opens its environment lazily, once
per process id, read-only and without locks, and can be pickled into DataLoader workers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import lmdb
import numpy as np
import simplejpeg

import abmilx
from abmilx.integrity import DamagedFileError, check_lmdb_file

FORMAT = "abmilx-patches"
FORMAT_VERSION = 1
META_KEY = b"__meta__"
PUTS_PER_TRANSACTION = 1000
JPEG_SUBSAMPLING = "420"  # like PIL's default, which the official stores used
_MIN_MAP_SIZE = 64 << 20


def coords_key(slide_id: str, scale: str) -> bytes:
    return f"{slide_id}/{scale}/coords".encode()


def patch_key(slide_id: str, scale: str, index: int) -> bytes:
    return f"{slide_id}/{scale}/{index:07d}".encode()


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an ``(H, W, 3)`` uint8 RGB image (libjpeg-turbo via simplejpeg)."""
    return simplejpeg.encode_jpeg(
        np.ascontiguousarray(image),
        quality=quality,
        colorspace="RGB",
        colorsubsampling=JPEG_SUBSAMPLING,
    )


def decode_jpeg(data: bytes) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB array from JPEG bytes."""
    return simplejpeg.decode_jpeg(data, colorspace="RGB")


def expected_map_size(n_patches: int, patch_size: int) -> int:
    """A generous LMDB map size for ``n_patches`` JPEGs (virtual reservation, not disk)."""
    per_patch = patch_size * patch_size * 3 + 4096  # raw size bounds JPEG at quality <= 95
    return max(_MIN_MAP_SIZE, int(n_patches * per_patch * 1.25))


def _partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


class PatchStoreWriter:
    """Write one patch store; it appears under ``path`` only when :meth:`close` succeeds.

    Writes go to ``<path>.partial`` in large transactions and are renamed at the end, so a
    killed job never leaves a file that looks complete. Use as a context manager: an exception
    inside the ``with`` block removes the partial file.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        patch_size: int,
        jpeg_quality: int,
        scales: Mapping[str, float],
        expected_patches: int = 0,
    ) -> None:
        if patch_size <= 0:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
        self.path = Path(path)
        self.patch_size = patch_size
        self.jpeg_quality = jpeg_quality
        self.scales = {name: float(mpp) for name, mpp in scales.items()}
        self._slides: dict[str, dict[str, int]] = {}
        self._extents: dict[str, dict[str, float | None]] = {}
        self._slide_mpp: dict[str, float | None] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = _partial_path(self.path)
        self._partial.unlink(missing_ok=True)  # left over by a killed job
        self._map_size = expected_map_size(expected_patches, patch_size)
        self._env = lmdb.open(
            str(self._partial),
            subdir=False,
            map_size=self._map_size,
            lock=False,
            sync=False,
            metasync=False,
            readahead=False,
            meminit=False,
        )

    def __enter__(self) -> PatchStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Put ``items`` in one transaction, growing the map when it is full."""
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    for key, value in items:
                        txn.put(key, value)
                return
            except lmdb.MapFullError:
                self._map_size *= 2
                self._env.set_mapsize(self._map_size)

    def add_slide(
        self,
        slide_id: str,
        scale: str,
        coords: np.ndarray,
        jpegs: Iterable[bytes],
        *,
        extent_level0: float | None = None,
        slide_mpp: float | None = None,
    ) -> int:
        """Store the patches of one slide at one scale, in the order of ``coords``.

        ``jpegs`` may be a generator (patches are written as they come, in batches of
        ``PUTS_PER_TRANSACTION``); it must yield exactly ``len(coords)`` items. Returns the count.
        """
        counts = self.add_scales(
            slide_id,
            {scale: coords},
            ((scale, index, data) for index, data in enumerate(jpegs)),
            extent_level0={scale: extent_level0},
            slide_mpp=slide_mpp,
        )
        return counts[scale]

    def add_scales(
        self,
        slide_id: str,
        coords: Mapping[str, np.ndarray],
        patches: Iterable[tuple[str, int, bytes]],
        *,
        extent_level0: Mapping[str, float | None] | None = None,
        slide_mpp: float | None = None,
    ) -> dict[str, int]:
        """Store the patches of several scales of one slide, arriving in any order.

        ``coords`` maps each scale to its ``(n, 2)`` level-0 corners; ``patches`` yields
        ``(scale, index, jpeg)`` with every index of every scale exactly once (a pass over one
        pyramid level interleaves the scales it reads). Returns the count per scale.
        """
        if "/" in slide_id or not slide_id:
            raise ValueError(f"slide id {slide_id!r} must be non-empty and contain no '/'")
        seen: dict[str, np.ndarray] = {}
        batch: list[tuple[bytes, bytes]] = []
        for scale, corners in coords.items():
            if scale not in self.scales:
                raise ValueError(
                    f"scale {scale!r} is not one of the store's scales {list(self.scales)}"
                )
            if scale in self._slides.get(slide_id, {}):
                raise ValueError(f"slide {slide_id!r} scale {scale!r} was already added")
            corners = np.asarray(corners, dtype="<i8").reshape(-1, 2)
            seen[scale] = np.zeros(len(corners), dtype=bool)
            batch.append((coords_key(slide_id, scale), corners.tobytes()))
        for scale, index, data in patches:
            flags = seen.get(scale)
            if flags is None:
                raise ValueError(f"slide {slide_id!r}: patch of unexpected scale {scale!r}")
            if not 0 <= index < len(flags):
                raise ValueError(f"slide {slide_id!r} scale {scale!r}: more patches than coords")
            if flags[index]:
                raise ValueError(f"slide {slide_id!r} scale {scale!r}: patch {index} given twice")
            flags[index] = True
            batch.append((patch_key(slide_id, scale, index), data))
            if len(batch) >= PUTS_PER_TRANSACTION:
                self._put_many(batch)
                batch = []
        for scale, flags in seen.items():
            if not flags.all():
                raise ValueError(
                    f"slide {slide_id!r} scale {scale!r}: {int(flags.sum())} patches for "
                    f"{len(flags)} coords"
                )
        self._put_many(batch)
        extent_level0 = extent_level0 or {}
        for scale, flags in seen.items():
            self._slides.setdefault(slide_id, {})[scale] = len(flags)
            extent = extent_level0.get(scale)
            self._extents.setdefault(slide_id, {})[scale] = (
                None if extent is None else float(extent)
            )
        self._slide_mpp[slide_id] = None if slide_mpp is None else float(slide_mpp)
        return {scale: len(flags) for scale, flags in seen.items()}

    def add_images(
        self,
        slide_id: str,
        scale: str,
        coords: np.ndarray,
        images: Iterable[np.ndarray],
        *,
        extent_level0: float | None = None,
        slide_mpp: float | None = None,
    ) -> int:
        """Like :meth:`add_slide` for ``(patch_size, patch_size, 3)`` uint8 RGB arrays."""
        expected = (self.patch_size, self.patch_size, 3)

        def encoded() -> Iterator[bytes]:
            for image in images:
                if image.shape != expected or image.dtype != np.uint8:
                    raise ValueError(
                        f"slide {slide_id!r}: patch of shape {image.shape} {image.dtype}, "
                        f"expected {expected} uint8"
                    )
                yield encode_jpeg(image, self.jpeg_quality)

        return self.add_slide(
            slide_id, scale, coords, encoded(), extent_level0=extent_level0, slide_mpp=slide_mpp
        )

    def reserve_bytes(self, n_bytes: int) -> None:
        """Grow the map so that at least ``n_bytes`` of values fit without remapping."""
        if n_bytes + _MIN_MAP_SIZE > self._map_size:
            self._map_size = n_bytes + _MIN_MAP_SIZE
            self._env.set_mapsize(self._map_size)

    def record_slides(self, meta: Mapping) -> None:
        """Adopt the slide entries of another store's meta (its entries were copied as-is)."""
        for slide_id, counts in meta["slides"].items():
            self._slides[slide_id] = dict(counts)
            self._extents[slide_id] = dict(meta.get("extent_level0", {}).get(slide_id, {}))
            self._slide_mpp[slide_id] = meta.get("slide_mpp", {}).get(slide_id)

    def meta(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "code_version": abmilx.__version__,
            "patch_size": self.patch_size,
            "jpeg_quality": self.jpeg_quality,
            "jpeg_subsampling": JPEG_SUBSAMPLING,
            "scales": {name: {"mpp": mpp} for name, mpp in self.scales.items()},
            "slides": self._slides,
            "extent_level0": self._extents,
            "slide_mpp": self._slide_mpp,
        }

    def close(self) -> Path:
        """Write the metadata, flush, and move the finished store to ``path``."""
        self._put_many([(META_KEY, json.dumps(self.meta()).encode())])
        self._env.sync(True)
        self._env.close()
        os.replace(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        """Discard everything written so far."""
        self._env.close()
        self._partial.unlink(missing_ok=True)


def write_empty_store(
    path: str | Path,
    slide_id: str,
    *,
    patch_size: int,
    jpeg_quality: int,
    scales: Mapping[str, float],
) -> Path:
    """A valid store that lists ``slide_id`` with zero patches at every scale."""
    with PatchStoreWriter(
        path, patch_size=patch_size, jpeg_quality=jpeg_quality, scales=scales
    ) as writer:
        for scale in writer.scales:
            writer.add_slide(slide_id, scale, np.zeros((0, 2), dtype="<i8"), [])
    return Path(path)


# LMDB refuses to open one file twice in a process, so readers of the same file share one
# environment: (st_dev, st_ino) -> [owning pid, environment, number of open PatchStores].
_SHARED_ENVIRONMENTS: dict[tuple[int, int], list] = {}


def _acquire_environment(path: Path) -> tuple[tuple[int, int], lmdb.Environment]:
    stat = path.stat()
    key = (stat.st_dev, stat.st_ino)
    pid = os.getpid()
    entry = _SHARED_ENVIRONMENTS.get(key)
    if entry is not None and entry[0] == pid:
        entry[2] += 1
        return key, entry[1]
    if entry is not None:
        # Inherited through fork: closing unmaps it in this process only (no locks are held).
        entry[1].close()
    check_lmdb_file(path)  # mapping a truncated file would end in SIGBUS on first read
    try:
        env = lmdb.open(
            str(path), subdir=False, readonly=True, lock=False, readahead=False, meminit=False
        )
    except lmdb.Error as error:
        raise DamagedFileError(path, f"unreadable LMDB store ({error})") from error
    _SHARED_ENVIRONMENTS[key] = [pid, env, 1]
    return key, env


def _release_environment(key: tuple[int, int]) -> None:
    entry = _SHARED_ENVIRONMENTS.get(key)
    if entry is None or entry[0] != os.getpid():
        return
    entry[2] -= 1
    if entry[2] <= 0:
        entry[1].close()
        del _SHARED_ENVIRONMENTS[key]


class PatchStore:
    """Read a patch store. Lazy and fork-safe: the environment opens on first use per process.

    Readers of the same file in one process share one environment (LMDB forbids a second one);
    a child process never uses its parent's environment but opens its own.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"patch store {self.path} does not exist")
        self._env: lmdb.Environment | None = None
        self._env_key: tuple[int, int] | None = None
        self._pid: int | None = None
        self._meta: dict | None = None
        self._coords: dict[tuple[str, str], np.ndarray] = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_env=None, _env_key=None, _pid=None)
        return state

    def _environment(self) -> lmdb.Environment:
        pid = os.getpid()
        if self._env is None or self._pid != pid:
            self._env_key, self._env = _acquire_environment(self.path)
            self._pid = pid
        return self._env

    def _get(self, key: bytes) -> bytes | None:
        with self._environment().begin(buffers=False) as txn:
            return txn.get(key)

    @property
    def meta(self) -> dict:
        if self._meta is None:
            raw = self._get(META_KEY)
            if raw is None:
                raise ValueError(f"{self.path} is not a patch store (no {META_KEY.decode()} key)")
            meta = json.loads(raw)
            if meta.get("format") != FORMAT:
                raise ValueError(f"{self.path}: format {meta.get('format')!r}, expected {FORMAT}")
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(
                    f"{self.path}: format_version {meta.get('format_version')}, "
                    f"this code reads {FORMAT_VERSION}"
                )
            self._meta = meta
        return self._meta

    @property
    def slide_ids(self) -> list[str]:
        return list(self.meta["slides"])

    @property
    def scales(self) -> list[str]:
        return list(self.meta["scales"])

    @property
    def patch_size(self) -> int:
        return int(self.meta["patch_size"])

    def _check(self, slide_id: str, scale: str) -> int:
        slides = self.meta["slides"]
        if slide_id not in slides:
            raise KeyError(f"slide {slide_id!r} is not in patch store {self.path}")
        if scale not in slides[slide_id]:
            raise KeyError(f"scale {scale!r} of slide {slide_id!r} is not in {self.path}")
        return int(slides[slide_id][scale])

    def count(self, slide_id: str, scale: str) -> int:
        return self._check(slide_id, scale)

    def coords(self, slide_id: str, scale: str) -> np.ndarray:
        """``(n, 2)`` int64 level-0 top-left corners (read-only array, cached)."""
        self._check(slide_id, scale)
        key = (slide_id, scale)
        if key not in self._coords:
            raw = self._get(coords_key(slide_id, scale))
            if raw is None:
                raise KeyError(f"{self.path}: coords of {slide_id!r}/{scale!r} are missing")
            self._coords[key] = np.frombuffer(raw, dtype="<i8").reshape(-1, 2).astype(np.int64)
        return self._coords[key]

    def extent_level0(self, slide_id: str, scale: str) -> float | None:
        """Patch footprint in level-0 pixels (None when the writer did not know it)."""
        self._check(slide_id, scale)
        return self.meta.get("extent_level0", {}).get(slide_id, {}).get(scale)

    def read_jpeg(self, slide_id: str, scale: str, index: int) -> bytes:
        count = self._check(slide_id, scale)
        if not 0 <= index < count:
            raise IndexError(f"patch {index} of {slide_id!r}/{scale!r}: the store has {count}")
        data = self._get(patch_key(slide_id, scale, int(index)))
        if data is None:
            raise KeyError(f"{self.path}: patch {index} of {slide_id!r}/{scale!r} is missing")
        return data

    def read(self, slide_id: str, scale: str, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """``(k, H, W, 3)`` uint8 RGB patches, in the order of ``indices``."""
        count = self._check(slide_id, scale)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= count):
            raise IndexError(
                f"indices out of range for {slide_id!r}/{scale!r} (count {count}): "
                f"min {indices.min()}, max {indices.max()}"
            )
        size = self.patch_size
        out = np.empty((len(indices), size, size, 3), dtype=np.uint8)
        with self._environment().begin(buffers=True) as txn:
            for row, index in enumerate(indices.tolist()):
                data = txn.get(patch_key(slide_id, scale, index))
                if data is None:
                    raise KeyError(f"{self.path}: patch {index} of {slide_id!r}/{scale!r} missing")
                out[row] = decode_jpeg(data)
        return out

    def close(self) -> None:
        """Release this reader's use of the environment (closed when no reader is left)."""
        if self._env is not None and self._pid == os.getpid() and self._env_key is not None:
            _release_environment(self._env_key)
        self._env = None
        self._env_key = None
        self._pid = None

    def __enter__(self) -> PatchStore:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def pack_stores(stores: Sequence[str | Path], out: str | Path) -> dict:
    """Merge per-slide stores into one, skipping stores without any patch. Returns the meta.

    All stores must agree on patch size, JPEG quality and scales (names and mpp); a slide id
    may appear in only one store. Copies raw JPEG bytes (no re-encoding).
    """
    if not stores:
        raise ValueError("pack needs at least one store")
    opened = [PatchStore(path) for path in stores]
    non_empty = [
        store
        for store in opened
        if any(sum(counts.values()) for counts in store.meta["slides"].values())
    ]
    reference = (non_empty or opened)[0].meta
    owner: dict[str, Path] = {}
    for store in non_empty:
        for field in ("patch_size", "jpeg_quality", "scales"):
            if store.meta[field] != reference[field]:
                raise ValueError(
                    f"cannot pack {store.path}: {field} {store.meta[field]} differs from "
                    f"{reference[field]} in {non_empty[0].path}"
                )
        for slide_id in store.meta["slides"]:
            if slide_id in owner:
                raise ValueError(
                    f"slide {slide_id!r} is in both {owner[slide_id]} and {store.path}"
                )
            owner[slide_id] = store.path
    total_bytes = sum(store.path.stat().st_size for store in non_empty)
    writer = PatchStoreWriter(
        out,
        patch_size=reference["patch_size"],
        jpeg_quality=reference["jpeg_quality"],
        scales={name: spec["mpp"] for name, spec in reference["scales"].items()},
    )
    writer.reserve_bytes(int(total_bytes * 1.5))
    with writer:
        for store in non_empty:
            with store._environment().begin() as txn:
                batch: list[tuple[bytes, bytes]] = []
                for key, value in txn.cursor():
                    if key == META_KEY:
                        continue
                    batch.append((key, value))
                    if len(batch) >= PUTS_PER_TRANSACTION:
                        writer._put_many(batch)
                        batch = []
                writer._put_many(batch)
            writer.record_slides(store.meta)
            store.close()
    return PatchStore(out).meta
