"""LMDB patch store: per-slide writer, dataset packer or index, and a lazy, fork-safe reader.

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

A dataset's stores are joined in one of two ways (config ``tiling.pack``, docs/scale.md):

- a packed copy (:func:`pack_stores`): the layout above, every patch copied once more;
- an index (:func:`index_stores`): a small LMDB whose only entry ``__meta__`` is the packed
  meta with format ``abmilx-patch-index`` plus ``"slide_store": {slide_id: path}`` (relative
  to the index's folder) and ``"stores": {path: {"size", "mtime_ns", "meta_sha256"}}``, the
  facts each per-slide store had when the index was built. :class:`PatchStore` reads either.

LMDB environments are not fork-safe, so :class:`PatchStore` opens its environment lazily, once
per process id, read-only and without locks, and can be pickled into DataLoader workers. Through
an index it opens per-slide stores on first use, at most ``max_open`` at once (least recently
used closed first), and checks each against the index whenever it opens it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import lmdb
import numpy as np
import simplejpeg

import abmilx
from abmilx.integrity import DamagedFileError, check_lmdb_file

FORMAT = "abmilx-patches"
FORMAT_VERSION = 1
INDEX_FORMAT = "abmilx-patch-index"
INDEX_FORMAT_VERSION = 1
MAX_OPEN_STORES = 64  # per-slide stores an index reader keeps open (an mmap and a descriptor each)
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

    def close(self, extra: Mapping | None = None) -> Path:
        """Write the metadata (updated with ``extra``), flush, and move the finished store to
        ``path``."""
        meta = self.meta() | dict(extra or {})
        self._put_many([(META_KEY, json.dumps(meta).encode())])
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


class StaleIndexError(DamagedFileError):
    """A per-slide store changed or vanished after the dataset index that lists it was built."""

    def __init__(self, index: Path, slide_id: str, store: Path, problem: str) -> None:
        super().__init__(
            store,
            f"{problem}; slide {slide_id!r} of index {index} was built from another version "
            "of this store: rebuild the index (rule pack_tiles)",
        )
        self.index, self.slide_id = index, slide_id


def _store_facts(path: Path, meta_bytes: bytes) -> dict:
    """What an index records of one per-slide store, to know it again."""
    stat = path.stat()
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "meta_sha256": hashlib.sha256(meta_bytes).hexdigest(),
    }


class PatchStore:
    """Read a patch store or a dataset index of stores. Lazy and fork-safe: environments open on
    first use per process.

    Readers of the same file in one process share one environment (LMDB forbids a second one);
    a child process never uses its parent's environments but opens its own. Through an index,
    at most ``max_open`` per-slide stores are open at once per reader.
    """

    def __init__(self, path: str | Path, *, max_open: int = MAX_OPEN_STORES) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"patch store {self.path} does not exist")
        if max_open < 1:
            raise ValueError(f"max_open must be at least 1, got {max_open}")
        self.max_open = max_open
        self._env: lmdb.Environment | None = None
        self._env_key: tuple[int, int] | None = None
        self._pid: int | None = None
        self._meta: dict | None = None
        self._coords: dict[tuple[str, str], np.ndarray] = {}
        # index only: per-slide store path -> (shared-environment key, environment), LRU order
        self._open: OrderedDict[str, tuple[tuple[int, int], lmdb.Environment]] = OrderedDict()
        self._open_pid: int | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_env=None, _env_key=None, _pid=None, _open=OrderedDict(), _open_pid=None)
        return state

    def _environment(self) -> lmdb.Environment:
        pid = os.getpid()
        if self._env is None or self._pid != pid:
            self._env_key, self._env = _acquire_environment(self.path)
            self._pid = pid
        return self._env

    @property
    def is_index(self) -> bool:
        """True when this file is a dataset index of per-slide stores (not a packed copy)."""
        return self.meta["format"] == INDEX_FORMAT

    def store_path(self, slide_id: str) -> Path:
        """The file that holds the patches of ``slide_id`` (this file for a packed store)."""
        if not self.is_index:
            return self.path
        return self.path.parent / self.meta["slide_store"][slide_id]

    def _verify(self, slide_id: str, relative: str) -> Path:
        """The per-slide store of ``slide_id``, if its size and mtime are those indexed."""
        path = self.path.parent / relative
        facts = self.meta["stores"][relative]
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise StaleIndexError(self.path, slide_id, path, "missing") from None
        for name, now in (("size", stat.st_size), ("mtime_ns", stat.st_mtime_ns)):
            if now != facts[name]:
                raise StaleIndexError(
                    self.path, slide_id, path, f"{name} {now}, the index recorded {facts[name]}"
                )
        return path

    def verify(self) -> None:
        """Raise StaleIndexError unless every store an index lists is as it was indexed (size,
        mtime); a no-op for a packed store. Runs when an index's meta is first read."""
        if not self.is_index:
            return
        first = {}
        for slide_id, relative in self.meta["slide_store"].items():
            first.setdefault(relative, slide_id)
        for relative, slide_id in first.items():
            self._verify(slide_id, relative)

    def _slide_environment(self, slide_id: str) -> lmdb.Environment:
        """The environment holding ``slide_id``'s entries (call after ``_check``)."""
        if self.meta["format"] != INDEX_FORMAT:
            return self._environment()
        pid = os.getpid()
        if self._open_pid != pid:  # a fresh process: the parent's environments are not ours
            self._open = OrderedDict()
            self._open_pid = pid
        relative = self.meta["slide_store"][slide_id]
        entry = self._open.get(relative)
        if entry is not None:
            self._open.move_to_end(relative)
            return entry[1]
        path = self._verify(slide_id, relative)
        key, env = _acquire_environment(path)
        try:
            with env.begin(buffers=False) as txn:
                raw = txn.get(META_KEY) or b""
            digest = hashlib.sha256(raw).hexdigest()
            if digest != self.meta["stores"][relative]["meta_sha256"]:
                raise StaleIndexError(self.path, slide_id, path, "its __meta__ entry differs")
        except BaseException:
            _release_environment(key)
            raise
        self._open[relative] = (key, env)
        while len(self._open) > self.max_open:
            _, (old_key, _) = self._open.popitem(last=False)
            _release_environment(old_key)
        return env

    @property
    def open_stores(self) -> int:
        """Per-slide stores this reader holds open in this process (0 for a packed store)."""
        return len(self._open) if self._open_pid == os.getpid() else 0

    def _get(self, key: bytes, slide_id: str | None = None) -> bytes | None:
        env = self._environment() if slide_id is None else self._slide_environment(slide_id)
        with env.begin(buffers=False) as txn:
            return txn.get(key)

    @property
    def meta(self) -> dict:
        if self._meta is None:
            raw = self._get(META_KEY)
            if raw is None:
                raise ValueError(f"{self.path} is not a patch store (no {META_KEY.decode()} key)")
            meta = json.loads(raw)
            versions = {FORMAT: FORMAT_VERSION, INDEX_FORMAT: INDEX_FORMAT_VERSION}
            if meta.get("format") not in versions:
                raise ValueError(
                    f"{self.path}: format {meta.get('format')!r}, expected {FORMAT} or "
                    f"{INDEX_FORMAT}"
                )
            if meta.get("format_version") != versions[meta["format"]]:
                raise ValueError(
                    f"{self.path}: format_version {meta.get('format_version')}, "
                    f"this code reads {versions[meta['format']]}"
                )
            self._meta = meta
            try:
                self.verify()  # an index whose stores changed fails before anything is read
            except StaleIndexError:
                self._meta = None
                raise
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
            raw = self._get(coords_key(slide_id, scale), slide_id)
            if raw is None:
                raise KeyError(
                    f"{self.store_path(slide_id)}: coords of {slide_id!r}/{scale!r} are missing"
                )
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
        data = self._get(patch_key(slide_id, scale, int(index)), slide_id)
        if data is None:
            raise KeyError(
                f"{self.store_path(slide_id)}: patch {index} of {slide_id!r}/{scale!r} is missing"
            )
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
        with self._slide_environment(slide_id).begin(buffers=True) as txn:
            for row, index in enumerate(indices.tolist()):
                data = txn.get(patch_key(slide_id, scale, index))
                if data is None:
                    raise KeyError(
                        f"{self.store_path(slide_id)}: patch {index} of {slide_id!r}/{scale!r} "
                        "missing"
                    )
                out[row] = decode_jpeg(data)
        return out

    def close(self) -> None:
        """Release this reader's use of its environments (each closed when no reader is left)."""
        if self._open_pid == os.getpid():
            for key, _ in self._open.values():
                _release_environment(key)
        self._open = OrderedDict()
        self._open_pid = None
        if self._env is not None and self._pid == os.getpid() and self._env_key is not None:
            _release_environment(self._env_key)
        self._env = None
        self._env_key = None
        self._pid = None

    def __enter__(self) -> PatchStore:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def _joinable(stores: Sequence[str | Path]) -> tuple[list[PatchStore], dict]:
    """The stores with at least one patch (opened) and the meta they share.

    All must agree on patch size, JPEG quality and scales (names and mpp); a slide id may
    appear in only one store."""
    if not stores:
        raise ValueError("pack needs at least one store")
    opened = [PatchStore(path) for path in stores]
    for store in opened:
        if store.is_index:
            raise ValueError(f"cannot pack {store.path}: it is an index, not a patch store")
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
    for store in opened:
        if store not in non_empty:
            store.close()
    return non_empty, reference


def _writer_like(out: str | Path, reference: Mapping) -> PatchStoreWriter:
    return PatchStoreWriter(
        out,
        patch_size=reference["patch_size"],
        jpeg_quality=reference["jpeg_quality"],
        scales={name: spec["mpp"] for name, spec in reference["scales"].items()},
    )


def pack_stores(stores: Sequence[str | Path], out: str | Path) -> dict:
    """Merge per-slide stores into one, skipping stores without any patch. Returns the meta.

    All stores must agree on patch size, JPEG quality and scales (names and mpp); a slide id
    may appear in only one store. Copies raw JPEG bytes (no re-encoding).
    """
    non_empty, reference = _joinable(stores)
    total_bytes = sum(store.path.stat().st_size for store in non_empty)
    writer = _writer_like(out, reference)
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


def index_stores(stores: Sequence[str | Path], out: str | Path) -> dict:
    """Write a dataset index of per-slide stores at ``out`` (no patch is copied); returns its
    meta. Same checks and slides as :func:`pack_stores`; each store is named by its path
    relative to ``out``'s folder and known again by its size, mtime and ``__meta__`` digest."""
    out = Path(out)
    non_empty, reference = _joinable(stores)
    writer = _writer_like(out, reference)
    slide_store: dict[str, str] = {}
    facts: dict[str, dict] = {}
    try:
        for store in non_empty:
            relative = Path(os.path.relpath(store.path.absolute(), out.parent.absolute()))
            name = relative.as_posix()
            facts[name] = _store_facts(store.path, store._get(META_KEY) or b"")
            writer.record_slides(store.meta)
            slide_store.update(dict.fromkeys(store.meta["slides"], name))
            store.close()
    except BaseException:
        writer.abort()
        raise
    writer.close(
        {
            "format": INDEX_FORMAT,
            "format_version": INDEX_FORMAT_VERSION,
            "slide_store": slide_store,
            "stores": facts,
        }
    )
    return PatchStore(out).meta


PACK_MODES = {"index": index_stores, "copy": pack_stores}
