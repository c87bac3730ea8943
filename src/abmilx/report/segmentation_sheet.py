"""A dataset's segmentation at a glance: the overlays of the slides most worth a look.

Checking 10,000 overlays one by one is not done; this sheet shows up to ``--max-slides`` of them
in a grid: every slide that failed or has no tissue first, then the slides with the least tissue
(where a wrong threshold or a pen mark shows first), each titled with its id, status and area.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
from matplotlib.figure import Figure

from abmilx.integrity import read_json_object
from abmilx.report.figures.draw import save
from abmilx.shards import listed_files


def chosen_records(records: list[dict], max_slides: int) -> list[dict]:
    """Failed and tissue-less slides first, then the smallest tissue areas, at most max_slides."""
    order = sorted(
        records,
        key=lambda r: (r.get("status") == "ok", r.get("tissue_area_mm2") or 0.0, r["slide_id"]),
    )
    return order[:max_slides]


def render(qc_records: list[Path], max_slides: int, out: Path) -> Path:
    records = [read_json_object(p) | {"_path": p} for p in qc_records]
    chosen = chosen_records(records, max_slides)
    columns = max(1, min(6, len(chosen)))
    rows = max(1, math.ceil(len(chosen) / columns))
    figure = Figure(figsize=(2.4 * columns, 2.2 * rows + 0.5))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis, record in zip(axes.flat, chosen, strict=False):
        overlay = record["_path"].with_name(f"{record['slide_id']}.overlay.png")
        if overlay.is_file():
            axis.imshow(cv2.cvtColor(cv2.imread(str(overlay)), cv2.COLOR_BGR2RGB))
        area = record.get("tissue_area_mm2")
        detail = f"{area:.2f} mm²" if isinstance(area, int | float) else record.get("reason", "")
        axis.set_title(f"{record['slide_id']}: {record.get('status')}\n{detail}"[:60], fontsize=7)
    for axis in axes.flat:
        axis.set_axis_off()
    shown = f"{len(chosen)} of {len(records)} slides"
    figure.suptitle(f"Segmentation overlays, {shown}: failed first, then least tissue", fontsize=9)
    figure.tight_layout()
    return save(figure, out, dpi=90)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", nargs="*", default=[], help="segmentation QC JSON files")
    parser.add_argument(
        "--shards", nargs="*", default=[], help="segmentation shard manifests listing them"
    )
    parser.add_argument("--max-slides", type=int, required=True, help="config: qc_overview_slides")
    parser.add_argument("--out", required=True, help="PNG (the PDF is written beside it)")
    args = parser.parse_args(argv)
    records = [Path(p) for p in [*args.records, *listed_files(args.shards, "record")]]
    if not records:
        parser.error("no records: give --records or --shards")
    print(f"wrote {render(records, args.max_slides, Path(args.out))}")


if __name__ == "__main__":
    main()
