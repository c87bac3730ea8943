"""What the segmentation view's resolution buys: CPU time against accuracy, on generated slides.

``segmentation.working_mpp`` is the one setting that makes segmentation cheaper: its cost is about
proportional to the view's pixels. This segments the same generated slides (3 x 2.4 mm, the
demo's task looks, pen marks and debris) at several view resolutions and prints, per resolution,
the CPU seconds of ``segment_slide`` (in this process, one thread), the IoU of the found tissue
with the generator's true tissue (lowest and mean over the slides), and the share of ink and
debris pixels kept as tissue (over all slides, and the worst slide). The demo's area filters are
used, as for its biopsies. CLAM segments at about 16 µm/px (level downsample 64 of a 40x slide).

Run: ``python -m bench.segmentation [--views 4,8,16] [--slides 10]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from abmilx.cohort import load_truth, plan_cohort, synthesize_slide
from abmilx.config import REPO_ROOT, load_config, schema_defaults
from abmilx.geometry import rasterize_polygons, read_geojson
from abmilx.segmentation.segment import segment_slide
from abmilx.segmentation.settings import SegmentationSettings

SLIDE_UM = (3000, 2400)


def generate(root: Path, n_slides: int) -> list[tuple[dict, Path, Path]]:
    """``(plan row, slide, truth file)`` of ``n_slides`` generated slides (some patients have
    two), about half of them inked."""
    n_cases = max(1, round(0.8 * n_slides))
    plan = plan_cohort("seg", "subtyping", n_slides, n_cases, seed=5, class_weights=[0.5, 0.5])
    slides = []
    for row in plan.to_dict("records"):
        slide, truth = root / row["file"], root / f"{row['file']}.npz"
        synthesize_slide(
            row, slide, truth, width_um=SLIDE_UM[0], height_um=SLIDE_UM[1], pen_probability=0.5
        )
        slides.append((row, slide, truth))
    return slides


def score(prefix: Path, truth_file: Path) -> tuple[float, int, int]:
    """IoU with the true tissue, artefact pixels kept as tissue, artefact pixels in all."""
    truth = load_truth(truth_file)
    height, width = truth["tissue"].shape
    cell = truth["downsample"]
    found = rasterize_polygons(read_geojson(f"{prefix}.geojson"), width, height, (cell, cell), 2)
    found = found.astype(bool)
    tissue, artefact = truth["tissue"], truth["artefact"]
    iou = float((found & tissue).sum() / (found | tissue).sum())
    return iou, int((found & artefact).sum()), int(artefact.sum())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", default="4,8,16", help="view resolutions in µm/px")
    parser.add_argument("--slides", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        views = [float(v) for v in args.views.split(",")]
    except ValueError:
        parser.error(f"--views must be comma-separated numbers, got {args.views!r}")
    if not all(view > 0 for view in views) or args.slides < 1:
        parser.error("--views must be positive and --slides at least 1")
    cv2.setNumThreads(1)
    settings = load_config(REPO_ROOT / "config.yaml")["segmentation"]  # the demo's, all keys
    default = schema_defaults("segmentation")["working_mpp"]
    print(f"{'view µm/px':>10} {'CPU s':>6} {'IoU min':>7} {'IoU mean':>8} "
          f"{'artefact kept':>13} {'worst slide':>11}")  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        slides = generate(root, args.slides)
        for view in views:
            cpu, ious, kept, total, worst = 0.0, [], 0, 0, 0.0
            for row, slide, truth in slides:
                prefix = root / f"{row['slide_id']}-{view:g}"
                mpp = None if np.isnan(row["mpp_override"]) else row["mpp_override"]
                start = time.process_time()
                segment_slide(
                    slide,
                    prefix,
                    slide_id=row["slide_id"],
                    dataset="seg",
                    mpp=mpp,
                    settings=SegmentationSettings.from_settings(settings | {"working_mpp": view}),
                )
                cpu += time.process_time() - start
                iou, slide_kept, slide_total = score(prefix, truth)
                ious.append(iou)
                kept, total = kept + slide_kept, total + slide_total
                worst = max(worst, slide_kept / max(slide_total, 1))
            results[view] = {"cpu_s": cpu, "iou_min": min(ious), "iou_mean": float(np.mean(ious)),
                             "artefact_kept": kept / max(total, 1), "worst": worst}  # fmt: skip
            print(f"{view:>10g} {cpu:>6.2f} {min(ious):>7.3f} {np.mean(ious):>8.3f} "
                  f"{kept / max(total, 1):>13.1%} {worst:>11.0%}"
                  f"{'  (default)' if view == default else ''}", flush=True)  # fmt: skip
    return results


if __name__ == "__main__":
    main()
