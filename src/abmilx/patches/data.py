"""Reading all patches of slides from a PatchStore in fixed-size chunks (inference data path).

Used by feature extraction and by E2E validation/prediction: a slide of 40k patches is never
held in memory as images, only as features, which avoids the out-of-memory failures at
inference that users report for the official code. The next chunks are read and decoded while
the encoder runs on the current one (worker processes, or one thread when there are none:
LMDB reads, libjpeg-turbo and the resize release the GIL), so the encoder never waits for JPEG.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF

from abmilx.patches.store import PatchStore
from abmilx.runtime.devices import autocast

CHANNEL_ORDERS = ("rgb", "bgr")
PREFETCH_CHUNKS = 2  # chunks decoded ahead of the encoder: memory stays a few chunks

T = TypeVar("T")


def to_chw_tensor(patches: np.ndarray, channel_order: str) -> torch.Tensor:
    """(k, H, W, 3) RGB uint8 from the store -> contiguous (k, 3, H, W) uint8 in `channel_order`.

    "bgr" reproduces the official code, whose TurboJPEG decoder returns BGR that is then
    normalised with RGB ImageNet statistics (docs/method.md).
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    if channel_order == "bgr":
        patches = patches[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).contiguous()


def resize_patches(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear antialiased resize of a (k, 3, H, W) uint8 batch to size x size (no-op if equal)."""
    if images.shape[-2:] == (size, size):
        return images
    return TF.resize(images, [size, size], antialias=True)


class SlideChunks(Dataset):
    """Items are (slide, start, stop) chunks of every patch of the slides, in store order.

    The store is opened lazily in each worker process (PatchStore is fork-safe that way).
    """

    def __init__(
        self,
        store_path: str | Path,
        slide_ids: Sequence[str],
        scale: str,
        chunk_size: int,
        image_size: int,
        channel_order: str = "rgb",
    ) -> None:
        self.store_path = str(store_path)
        self.scale = scale
        self.image_size = image_size
        self.channel_order = channel_order
        repeated = sorted(s for s, n in Counter(slide_ids).items() if n > 1)
        if repeated:  # callers pair each requested slide with one yield
            raise ValueError(f"slides requested more than once: {repeated[:10]}")
        store = PatchStore(self.store_path)
        self.counts = {slide_id: store.count(slide_id, scale) for slide_id in slide_ids}
        self.items = [
            (slide_id, start, min(start + chunk_size, count))
            for slide_id, count in self.counts.items()
            for start in range(0, count, chunk_size)
        ]
        self._store: PatchStore | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        if self._store is None:
            self._store = PatchStore(self.store_path)
        slide_id, start, stop = self.items[index]
        try:
            patches = self._store.read(slide_id, self.scale, np.arange(start, stop))
        except ValueError as error:  # a JPEG that does not decode
            raise ValueError(
                f"{self.store_path}: slide {slide_id!r} scale {self.scale!r} patches "
                f"{start}..{stop - 1}: {error}"
            ) from error
        images = resize_patches(to_chw_tensor(patches, self.channel_order), self.image_size)
        return {"slide_id": slide_id, "start": start, "stop": stop, "images": images}


def prefetch(items: Iterable[T], depth: int = PREFETCH_CHUNKS) -> Iterator[T]:
    """Yield `items`, produced by a background thread that runs up to `depth` items ahead.

    Errors of the producer are raised in the consumer; closing the generator early stops the
    thread after at most one more item.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(entry: tuple) -> bool:
        """Put unless the consumer has gone; False when it has."""
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as error:  # handed to the consumer
            offer((done, error))

    threading.Thread(target=produce, name="prefetch", daemon=True).start()
    try:
        while True:
            item, error = ready.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()


def iter_slide_features(
    store_path: str | Path,
    slide_ids: Sequence[str],
    encode: Callable[[torch.Tensor], torch.Tensor],
    *,
    scale: str,
    chunk_size: int,
    image_size: int,
    channel_order: str,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[str, torch.Tensor, np.ndarray]]:
    """Yield (slide_id, features (n, d) float32 on CPU, coords (n, 2) int64) per slide, in order.

    `encode` maps a (k, 3, S, S) uint8 chunk to (k, d) features. Chunks are decoded ahead in
    `num_workers` processes (or one thread when 0) and written into one preallocated feature
    tensor per slide, so memory is that tensor plus a few chunks whatever the slide size.
    `pin_memory` pins the chunks for asynchronous copies to a GPU. Slides without patches at
    `scale` are skipped (the caller sees them missing).
    """
    dataset = SlideChunks(store_path, slide_ids, scale, chunk_size, image_size, channel_order)
    if num_workers > 0:
        chunks: Iterable[dict] = DataLoader(
            dataset,
            batch_size=None,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=pin_memory,
            prefetch_factor=max(1, PREFETCH_CHUNKS // num_workers),  # chunks ahead, in all
            generator=torch.Generator(),  # its seed draw must not consume the global RNG
        )
    else:

        def read(index: int) -> dict:
            chunk = dataset[index]
            if pin_memory:
                chunk["images"] = chunk["images"].pin_memory()
            return chunk

        chunks = prefetch(read(index) for index in range(len(dataset)))
    store = PatchStore(str(store_path))
    features: torch.Tensor | None = None
    for chunk in chunks:
        slide_id, start, stop = chunk["slide_id"], chunk["start"], chunk["stop"]
        encoded = encode(chunk["images"])
        if start == 0:
            count = dataset.counts[slide_id]
            features = torch.empty((count, *encoded.shape[1:]), dtype=torch.float32)
        assert features is not None  # chunks of a slide come in order, from start 0
        features[start:stop] = encoded
        if stop == dataset.counts[slide_id]:
            coords = np.asarray(store.coords(slide_id, scale), dtype=np.int64)
            yield slide_id, features, coords
            features = None


def make_encode_fn(
    encoder: torch.nn.Module,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool = False,
):
    """uint8 (k, 3, S, S) -> (k, d) features, under no_grad with the encoder's normalisation."""

    @torch.no_grad()
    def encode(images: torch.Tensor) -> torch.Tensor:
        x = images.to(device, non_blocking=True).float().div_(255.0)
        x = encoder.normalize(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            return encoder(x)

    return encode
