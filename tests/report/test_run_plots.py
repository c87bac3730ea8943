"""Per-run pictures for the report and the segmentation overview sheet."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from abmilx.report import segmentation_sheet
from abmilx.report.runs import render_run
from abmilx.report.segmentation_sheet import chosen_records


def toy_run(folder, survival: bool):
    rng = np.random.default_rng(0)
    (folder / "fold0").mkdir(parents=True)
    pd.DataFrame(
        {"epoch": range(4), "lr": [1e-3, 8e-4, 5e-4, 2e-4], "train_loss": [1.0, 0.8, 0.6, 0.5]}
    ).to_csv(folder / "fold0" / "train_log.csv", index=False)
    n = 40
    if survival:
        predictions = pd.DataFrame(
            {
                "case_id": [f"c{i}" for i in range(n)],
                "time": rng.uniform(1, 60, n),
                "event": rng.integers(0, 2, n),
                "risk": rng.normal(size=n),
            }
        )
    else:
        labels = rng.choice(["a", "b", "c"], n)
        probs = rng.dirichlet(np.ones(3), n)
        predictions = pd.DataFrame({"slide_id": range(n), "label": labels})
        for i, name in enumerate("abc"):
            predictions[f"prob_{name}"] = probs[:, i]
        predictions["pred"] = np.array(list("abc"))[probs.argmax(axis=1)]
    predictions.to_csv(folder / "predictions.csv", index=False)
    return folder


def test_run_pictures_have_one_panel_per_view(tmp_path):
    classification = render_run(toy_run(tmp_path / "cls", False), "cls", tmp_path / "c.png")
    survival = render_run(toy_run(tmp_path / "sur", True), "sur", tmp_path / "s.png")
    width_c, height_c = Image.open(classification).size
    width_s, height_s = Image.open(survival).size
    assert width_c / height_c > width_s / height_s  # curves + ROC + confusion vs curves + KM
    assert classification.with_suffix(".pdf").is_file() and survival.with_suffix(".pdf").is_file()


def test_overview_shows_failed_slides_first_then_least_tissue(tmp_path):
    records = [
        {"slide_id": "big", "status": "ok", "tissue_area_mm2": 9.0},
        {"slide_id": "small", "status": "ok", "tissue_area_mm2": 0.1},
        {"slide_id": "bad", "status": "failed", "reason": "truncated file"},
        {"slide_id": "empty", "status": "no_tissue", "tissue_area_mm2": 0.0},
    ]
    assert [r["slide_id"] for r in chosen_records(records, 3)] == ["bad", "empty", "small"]
    paths = []
    for record in records:
        path = tmp_path / f"{record['slide_id']}.json"
        path.write_text(json.dumps(record))
        cv2.imwrite(str(tmp_path / f"{record['slide_id']}.overlay.png"), np.zeros((20, 30, 3)))
        paths.append(path)
    out = segmentation_sheet.render(paths, 2, tmp_path / "sheet.png")
    assert out.is_file() and out.with_suffix(".pdf").is_file()
