"""Whole-slide inference memory does not grow with the slide: 1k vs 20k patches within 10 %."""

import json
import subprocess
import sys

import numpy as np

from abmilx.patches.store import PatchStoreWriter

# Runs in a fresh interpreter: the peaks after the 1k-patch slide, then after the 20k-patch one
# (ru_maxrss is a running maximum, so the second says how far the large slide went beyond the
# small one). The encoder is a real function with 64 features per patch: the features of a slide
# (n x d floats) are all that should grow; images are only ever held a few chunks at a time.
CHILD = """
import json, resource, sys
import torch
from abmilx.patches.data import iter_slide_features

torch.manual_seed(0)
weight = torch.randn(3, 64)
peak_anon = 0.0

def anonymous_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024

def encode(images):
    global peak_anon
    peak_anon = max(peak_anon, anonymous_mib())
    return images.float().mean(dim=(2, 3)) @ weight

peaks = []
for store in sys.argv[1:]:
    for _, features, _ in iter_slide_features(
        store, ["s"], encode, scale="main", chunk_size=128, image_size=32, channel_order="rgb"
    ):
        count = len(features)
    peak_anon = max(peak_anon, anonymous_mib())
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peaks.append({"patches": count, "maxrss_mib": maxrss, "anon_mib": peak_anon})
print(json.dumps(peaks))
"""


def write_slide_store(path, n_patches):
    rng = np.random.default_rng(0)
    tiles = np.clip(rng.normal(150, 20, (16, 32, 32, 3)), 0, 255).astype(np.uint8)
    with PatchStoreWriter(
        path, patch_size=32, jpeg_quality=90, scales={"main": 1.0}, expected_patches=n_patches
    ) as writer:
        images = (tiles[i % 16] for i in range(n_patches))
        writer.add_images("s", "main", np.zeros((n_patches, 2), int), images)
    return path


def peak_memory(*stores):
    command = [sys.executable, "-c", CHILD, *map(str, stores)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_peak_memory_of_a_20k_patch_slide_is_within_10_percent_of_a_1k_one(tmp_path):
    small, large = peak_memory(
        write_slide_store(tmp_path / "small.lmdb", 1_000),
        write_slide_store(tmp_path / "large.lmdb", 20_000),
    )
    assert (small["patches"], large["patches"]) == (1_000, 20_000)
    # peak RSS (ru_maxrss, includes the LMDB pages read) and peak anonymous memory (the heap)
    assert large["maxrss_mib"] <= 1.10 * small["maxrss_mib"], (small, large)
    assert large["anon_mib"] <= 1.10 * small["anon_mib"], (small, large)
