"""Whole-slide inference and feature extraction: patches/s from the store vs the pure encoder.

Full path: `iter_slide_features` over one slide of an LMDB store (read, decode, resize in
chunks, decoded ahead of the encoder) into the encoder, as feature extraction, E2E validation
and prediction run it. Pure encoder: the same encode function on one chunk already decoded in
memory. Both at the demo's settings (config.yaml): the feature set's encoder for extraction,
the E2E experiment's encoder at eval_size for inference (chunks cut to a quarter of the slide
when larger, so that the slide has several); limit: full >= 0.8 x pure.

Run: ``.venv/bin/python -m bench.inference [--patches 2048] [--threads 1]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from abmilx.models import create_encoder
from abmilx.patches.data import iter_slide_features, make_encode_fn, resize_patches, to_chw_tensor
from abmilx.patches.store import PatchStore
from bench.common import (
    DEMO_E2E,
    DEMO_FEATURES,
    amp_dtype,
    demo_config,
    device,
    verdict,
    write_store,
)

LIMIT = 0.8


def cases() -> dict[str, dict]:
    """Encoder, image size, chunk and amp of feature extraction and of E2E inference (demo)."""
    config = demo_config()
    features = config["feature_sets"][DEMO_FEATURES]
    e2e = config["experiments"][DEMO_E2E]["settings"]
    return {
        f"feature extraction ({DEMO_FEATURES})": {
            "encoder": features["encoder"],
            "image_size": features["image_size"],
            "chunk": features["batch_size"],
            "amp": features["amp"],
        },
        f"whole-slide inference ({DEMO_E2E})": {
            "encoder": e2e["encoder"],
            "image_size": e2e["eval_size"],
            "chunk": e2e["eval_patch_batch_size"],
            "amp": e2e["amp"],
        },
    }


def rates(store: Path, case: dict, on: torch.device, n_patches: int) -> tuple[float, float]:
    """(full path, pure encoder) patches per second, after one warm-up chunk each."""
    torch.manual_seed(0)
    encoder = create_encoder(case["encoder"], weights="random").to(on).eval()
    encode = make_encode_fn(encoder, on, amp_dtype(case["amp"], on), channels_last=True)
    chunk = min(case["chunk"], n_patches // 4)  # several chunks, so that decoding can overlap
    patches = PatchStore(store).read("s", "main", range(chunk))
    images = resize_patches(to_chw_tensor(patches, "rgb"), case["image_size"])
    encode(images)
    start = time.perf_counter()
    for _ in range(n_patches // chunk):
        encode(images).float().sum().item()  # .item() waits for the device
    pure = (n_patches // chunk) * chunk / (time.perf_counter() - start)

    def run() -> None:
        for _, features, _ in iter_slide_features(
            store,
            ["s"],
            encode,
            scale="main",
            chunk_size=chunk,
            image_size=case["image_size"],
            channel_order="rgb",
            pin_memory=on.type == "cuda",
        ):
            features.sum().item()

    start = time.perf_counter()
    run()
    full = n_patches / (time.perf_counter() - start)
    return full, pure


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=2048, help="patches of the slide")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    on = device()
    torch.set_num_threads(args.threads)
    patch_size = demo_config()["tiling"]["patch_size"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "slide.lmdb", patch_size, {"s": {"main": args.patches}})
        for name, case in cases().items():
            full, pure = rates(store, case, on, args.patches)
            print(
                f"  {name}: {case['encoder']} at {case['image_size']} px, chunks of "
                f"{min(case['chunk'], args.patches // 4)}, amp {case['amp']}, {on.type}, {args.threads} thread(s): "
                f"full path {full:.0f} patches/s, pure encoder {pure:.0f} patches/s"
            )
            verdict(f"{name}, full / pure", full / pure, LIMIT, at_least=True)
            results[name] = {"full_patches_per_s": full, "pure_patches_per_s": pure}
    return results


if __name__ == "__main__":
    main()
