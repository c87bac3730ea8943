"""The paper's tables: every run's bootstrap estimate with its 95 % interval, as CSV and Markdown.

``main`` lists every run; the tables declared in the config (``tables:``) are rendered by one
function, :func:`render_table`, with the paper's values beside ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from abmilx.integrity import read_json_object
from abmilx.report.paper import load_paper_values, paper_cell
from abmilx.report.publish import publish
from abmilx.report.sparsity import DEFINITION, sparsity_summary

# Which metric a table shows for each task (the paper: AUC for subtyping/diagnosis, accuracy for
# grading, C-index for survival); the other metrics stay in the CSV.
HEADLINE_METRIC = {
    "subtyping": "auc",
    "diagnosis": "auc",
    "grading": "balanced_accuracy",
    "survival": "c_index",
}


def interval(summary: Mapping) -> str:
    return (
        f"{100 * summary['mean']:.2f} "
        f"[{100 * summary['ci_low']:.2f}, {100 * summary['ci_high']:.2f}]"
    )


def load_runs(metric_files: Iterable[str | Path]) -> list[dict]:
    runs = []
    for path in metric_files:
        runs.append(read_json_object(path))
    return runs


def main_table(runs: list[dict], settings: Mapping) -> pd.DataFrame:
    """Long table: one row per (experiment, dataset, metric) with point, mean, CI, std and cost."""
    rows = []
    for run in runs:
        experiment = settings["experiments"].get(run["experiment"], {})
        weights = [("main", run["metrics"])]
        if run.get("ema"):  # evaluation.model_weights both: the EMA teacher too
            weights.append(("ema", run["ema"]["metrics"]))
        for which, metric, summary in (
            (w, metric, summary) for w, m in weights for metric, summary in m.items()
        ):
            title = experiment.get("title", run["experiment"])
            rows.append(
                {
                    "experiment": run["experiment"],
                    "weights": which,
                    "title": title + (" (EMA teacher)" if which == "ema" else ""),
                    "kind": experiment.get("kind", ""),
                    "dataset": run["dataset"],
                    "task": settings["datasets"].get(run["dataset"], run.get("task", "")),
                    "metric": metric,
                    "point": summary["point"],
                    "mean": summary["mean"],
                    "ci_low": summary["ci_low"],
                    "ci_high": summary["ci_high"],
                    "std": summary["std"],
                    "n_test": summary["n"],
                    "n_boot": summary["n_boot"],
                    "encoder_weights": run["provenance"].get("encoder_weights"),
                    "selection": (run.get("selection") or {}).get("protocol", ""),
                    "protocol": run.get("protocol", "clean"),
                    "train_seconds": run["cost"].get("train_seconds"),
                    "params": run["cost"].get("params"),
                    "inference_seconds_per_slide": run["cost"].get("inference_seconds_per_slide"),
                }
            )
    columns = ["experiment", "weights", "dataset", "metric"]
    return pd.DataFrame(rows).sort_values(columns, kind="stable").reset_index(drop=True)


def headline_markdown(table: pd.DataFrame, settings: Mapping) -> str:
    """Experiments as rows, datasets as columns, each cell the headline metric with its 95 % CI."""
    datasets = list(settings["datasets"])
    header = ["Method"] + [f"{d} ({HEADLINE_METRIC[settings['datasets'][d]]})" for d in datasets]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    flagged = set(table.loc[table["selection"] == "test_official", "experiment"])
    for experiment, meta in settings["experiments"].items():
        for weights in ("main", "ema"):
            rows = table[(table.experiment == experiment) & (table.weights == weights)]
            if weights == "ema" and rows.empty:
                continue
            title = meta["title"] + (" (EMA teacher)" if weights == "ema" else "")
            cells = [title + (" †" if experiment in flagged else "")]
            for dataset in datasets:
                metric = HEADLINE_METRIC[settings["datasets"][dataset]]
                match = rows[(rows.dataset == dataset) & (rows.metric == metric)]
                cells.append(interval(match.iloc[0]) if len(match) else "n/a")
            lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        "Values: bootstrap mean over test-set resamples ×100, with the 2.5 and 97.5 percentiles "
        "in brackets. The CSV beside this file has every metric, the point estimate, the "
        "bootstrap std (the official code's ±) and the cost of each run.",
    ]
    if flagged:
        notes.append(
            "† Model selected on the test set (the official BRCA-subtyping and survival "
            "protocol): optimistic, shown for comparison with the paper only."
        )
    notes += encoder_provenance(zip(table["title"], table["encoder_weights"], strict=True))
    notes.append(protocol_note(zip(table["title"], table["protocol"], strict=True)))
    return "\n".join(lines + notes) + "\n"


PROTOCOL_WORDS = {
    "clean": "clean (this project's choices)",
    "official": "official (trained, selected and evaluated as the authors' code does)",
}


def protocol_note(rows: Iterable[tuple[str, str]]) -> str:
    """Which protocol made the numbers (docs/protocol.md): one line for all rows, or per row."""
    by_row = {row: protocol for row, protocol in rows if protocol}
    protocols = sorted(set(by_row.values()))
    if len(protocols) == 1:
        return f"Protocol: {PROTOCOL_WORDS[protocols[0]]}; see docs/protocol.md."
    rows_of = {p: ", ".join(row for row, q in by_row.items() if q == p) for p in protocols}
    return "Protocol: " + "; ".join(f"{p} for {rows_of[p]}" for p in protocols) + "."


def _describe_weights(weights: str) -> str:
    if weights == "random":
        return "Encoders initialised at random (no pretrained weights were available)"
    if weights.startswith("pretrain:"):
        return (
            f"Encoders pretrained by the demo's pretrain stage ({weights}: self-supervised on a "
            "separate generated cohort, never on evaluation slides), its stand-in for "
            "ImageNet/foundation-model weights"
        )
    if weights == "imagenet":
        return "Encoders with ImageNet weights"
    return f"Encoders loaded from {weights}"


def encoder_provenance(rows: Iterable[tuple[str, Any]]) -> list[str]:
    """One line per kind of encoder weights, naming the rows that used it: which numbers come
    from random, stand-in or real pretrained encoders (weights as the run's provenance says)."""
    by_weights: dict[str, list[str]] = {}
    for label, weights in rows:
        if isinstance(weights, str) and weights:
            labels = by_weights.setdefault(weights, [])
            if label not in labels:
                labels.append(label)
    lines = [f"{_describe_weights(w)}: {'; '.join(by_weights[w])}." for w in sorted(by_weights)]
    if any(w == "random" or w.startswith("pretrain:") for w in by_weights):
        lines.append(
            "Random or stand-in encoders: these numbers are not comparable with the paper's."
        )
    return lines


def _markdown(table: pd.DataFrame) -> str:
    def cell(value):
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join(lines)


def cohort_table(qc: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: slides by QC status, tissue and patches per slide (the paper's data section)."""
    ok = qc[qc["status"] == "ok"]
    patch_columns = [c for c in qc.columns if c.startswith("patches_")]
    summary = qc.groupby("dataset").agg(slides=("slide_id", "size"))
    for status in ["ok", "failed", "no_tissue"]:
        summary[status] = qc[qc["status"] == status].groupby("dataset").size()
    summary["tissue_mm2_per_slide"] = ok.groupby("dataset")["tissue_area_mm2"].mean()
    for column in patch_columns:
        summary[f"{column}_per_slide"] = ok.groupby("dataset")[column].mean()
        summary[f"{column}_total"] = ok.groupby("dataset")[column].sum()
    return summary.fillna(0).reset_index()


def write_tables(
    metric_files: Iterable[str | Path],
    out_dir: str | Path,
    settings: Mapping,
    qc_table: str | Path | None = None,
    declared: Iterable[str | Path] = (),
):
    """main and cohort tables, beside copies of the declared tables rendered one by one
    (``declared``: their cache folders, rendered by the per-table rule so that they rerun alone)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if qc_table is not None:
        cohort = cohort_table(pd.read_csv(qc_table, sep="\t"))
        cohort.to_csv(out_dir / "cohort.csv", index=False, float_format="%.4g")
        (out_dir / "cohort.md").write_text(
            "# Cohorts after preprocessing\n\n"
            + _markdown(cohort)
            + "\n\nPer-slide detail and the reason of every failed slide: results/qc/slides.tsv.\n"
        )
    runs = load_runs(metric_files)
    table = main_table(runs, settings)
    table.to_csv(out_dir / "main.csv", index=False, float_format="%.6g")
    (out_dir / "main.md").write_text("# Main results\n\n" + headline_markdown(table, settings))
    publish(declared, out_dir, part=False)
    return table


# --- Declared tables (config `tables:`): rows = experiments or a grid's points, columns = datasets,
# each cell our bootstrap mean [95 % CI] with the paper's value beside it. ------------------------

METRIC_LABEL = {
    "auc": "AUC",
    "balanced_accuracy": "Acc.",
    "c_index": "C-index",
    "sparsity": "sparsity",
    "cost.params": "parameters",
    "cost.flops_per_slide": "FLOPs / slide",
    "cost.train_seconds": "train s",
    "cost.peak_rss_mb": "peak MB",
    "cost.inference_seconds_per_slide": "inference s / slide",
    # as the paper counts them (abmilx.evaluation.paper_cost)
    "cost.paper_params": "#Parameter",
    "cost.paper_flops": "FLOPs (512 patches)",
    "cost.train_hours": "TTime (h)",
    "cost.memory_mb": "Memory (MB)",
    "cost.paper_inference_seconds": "IT (s, 10,000 patches)",
}


COVERAGE = "coverage"
"""results/tables/coverage.{csv,md}: the ledger's name, no declared table's."""


def plan_tables(
    tables: Mapping[str, Mapping],
    experiments,
    datasets: Mapping[str, str],
    unavailable: Mapping[str, str] | None = None,
) -> dict[str, dict]:
    """Resolve each declared table to its rows (runs) and columns, at parse time.

    ``experiments`` is an :class:`abmilx.experiments.ExperimentSet`; ``datasets`` maps each
    dataset to its task; ``unavailable`` maps experiments that cannot run to the reason (their
    rows show it). Unknown experiments, grids or datasets fail here, naming the key.
    """
    plans = {}
    paper_values = load_paper_values()
    unavailable = unavailable or {}
    for name, spec in tables.items():
        where = f"config key 'tables/{name}"
        if name == COVERAGE:
            raise ValueError(f"{where}': {COVERAGE!r} is the coverage ledger's name; rename it")
        names = list(spec["rows"])
        grids = [spec["grid"]] if isinstance(spec["grid"], str) else spec["grid"] or []
        for grid in grids:
            if grid not in experiments.grids:
                raise ValueError(
                    f"{where}/grid': no grid experiment {grid!r}; "
                    f"grids: {', '.join(experiments.grids) or 'none'}"
                )
            names += [point["name"] for point in experiments.grids[grid]["points"]]
        paper_rows = {key: _paper_row(value) for key, value in spec["paper"]["rows"].items()}

        context = (experiments, unavailable, paper_rows)
        rows = [_experiment_row(e, f"{where}/rows'", *context) for e in names]
        for label, members in spec["best"].items():
            where_best = f"{where}/best/{label}'"
            rows.append(
                _best_row(label, [_experiment_row(m, where_best, *context) for m in members])
            )
            rows[-1]["paper"] = paper_rows.get(label)
        for label, reason in spec["unavailable"].items():
            rows.append(
                {
                    "label": label,
                    "experiment": None,
                    "run": None,
                    "datasets": None,
                    "paper": paper_rows.get(label),
                    "reason": reason,
                }
            )
        labels = [row["label"] for row in rows]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(
                f"{where}/rows': several rows are labelled {repeated}; give them distinct titles"
            )
        unknown = set(paper_rows) - {r["experiment"] or r["label"] for r in rows}
        if unknown:
            raise ValueError(f"{where}/paper/rows': not a row of the table: {sorted(unknown)}")
        columns = []
        references = spec["paper"]["columns"]
        for dataset in spec["datasets"] or list(datasets):
            if dataset not in datasets:
                raise ValueError(
                    f"{where}/datasets': no dataset {dataset!r}; known: {', '.join(datasets)}"
                )
            headline = HEADLINE_METRIC[datasets[dataset]]
            for metric in spec["metrics"] or [headline]:
                paper = references.get(metric) or (
                    references.get(dataset) if metric == headline else None
                )
                columns.append(
                    {"dataset": dataset, "metric": metric, "headline": headline, "paper": paper}
                )
        unknown = set(references) - {c["dataset"] for c in columns} - {c["metric"] for c in columns}
        if unknown:
            raise ValueError(
                f"{where}/paper/columns': not a dataset or metric of the table: {sorted(unknown)}"
            )
        _check_paper_references(where, references, paper_rows, paper_values)
        plans[name] = {
            "title": spec["title"] or name,
            "note": spec["note"],
            "decimals": spec["decimals"],
            "rows": rows,
            "columns": columns,
        }
    return plans


def _experiment_row(
    experiment: str, where: str, experiments, unavailable: Mapping, paper_rows: Mapping
) -> dict:
    """A table row running ``experiment`` (its run, or the reason it cannot run)."""
    if experiment not in experiments.experiments:
        raise ValueError(
            f"{where}: no experiment {experiment!r}; known: {', '.join(experiments.experiments)}"
        )
    resolved = experiments.experiments[experiment]
    reason = unavailable.get(experiment)
    return {
        "label": resolved["title"] or experiment,
        "experiment": experiment,
        "run": None if reason else experiments.run_of[experiment],
        "datasets": resolved["datasets"],
        "paper": paper_rows.get(experiment),
        "reason": reason,
    }


def _best_row(label: str, members: list[dict]) -> dict:
    """A derived row ("Best of two-stage", "Best in FMs"): per column, the member run with the
    highest value there; unavailable only when every member is, with their reasons."""
    reasons = list(dict.fromkeys(m["reason"] for m in members if m["reason"]))
    available = [m for m in members if not m["reason"]]
    return {
        "label": label,
        "experiment": None,
        "run": None,
        "datasets": None,
        "paper": None,
        "reason": None if available else "; ".join(reasons),
        "best_of": available,
    }


def best_member(
    row: Mapping, dataset: str, metric: str, headline: str, runs: Mapping[tuple[str, str], Mapping]
) -> Mapping | None:
    """The member of a derived row that is best on ``dataset``: by ``metric``'s mean, or by the
    headline metric for a cost column (the cost of the run the row reports). None: no member
    runs there."""
    key = headline if metric.startswith("cost.") else metric
    best, best_value = None, None
    for member in row["best_of"]:
        if member["datasets"] is not None and dataset not in member["datasets"]:
            continue
        run = runs.get((member["run"], dataset))
        if run is None:
            raise ValueError(f"no metrics.json of run {member['run']!r} on {dataset!r}")
        summary = _cell_value(run, key)
        if summary is not None and (best_value is None or summary["mean"] > best_value):
            best, best_value = run, summary["mean"]
    return best


def _paper_row(value: str | Mapping) -> dict[str, str | None]:
    """A paper row reference: a label in the columns' table, or {table, row} of another table."""
    if isinstance(value, str):
        return {"table": None, "row": value}
    return {"table": value["table"], "row": value["row"]}


def _check_paper_references(
    where: str, columns: Mapping, rows: Mapping[str, Mapping], paper: pd.DataFrame
) -> None:
    """Each paper column must exist in its table, each paper row in its own table or in one of
    the columns' tables."""
    for key, reference in columns.items():
        known = set(paper.loc[paper.table == reference["table"], "column"])
        if reference["column"] not in known:
            raise ValueError(
                f"{where}/paper/columns/{key}': the paper's {reference['table']!r} has no "
                f"column {reference['column']!r}; it has: {', '.join(sorted(known)) or 'none'}"
            )
    tables = {reference["table"] for reference in columns.values()}
    for key, reference in rows.items():
        own = {reference["table"]} if reference["table"] else tables
        if reference["row"] not in set(paper.loc[paper.table.isin(own), "row"]):
            raise ValueError(
                f"{where}/paper/rows/{key}': no row {reference['row']!r} in the paper's "
                f"{', '.join(sorted(own)) or '(no paper columns given)'}"
            )


def _cell_value(run: Mapping | None, metric: str) -> Mapping | None:
    """A metric's bootstrap summary, or a cost figure as {point: value}; None if absent."""
    if run is None:
        return None
    if metric.startswith("cost."):
        value = run["cost"].get(metric.removeprefix("cost."))
        if value is not None and metric == "cost.memory_mb":  # say whose memory it is
            value = f"{value:.4g} ({run['cost'].get('memory_source', 'unknown')})"
        return None if value is None else {"point": value}
    return run["metrics"].get(metric)


def table_cells(plan: Mapping, runs: Mapping[tuple[str, str], Mapping], paper) -> pd.DataFrame:
    """Long table of one declared table: a row per (row, column) with ours, the paper's, why not."""
    records = []
    for row in plan["rows"]:
        for column in plan["columns"]:
            dataset, metric = column["dataset"], column["metric"]
            reason = row["reason"]
            run = None
            if reason is None and row["datasets"] is not None and dataset not in row["datasets"]:
                reason = f"not run on {dataset} (runs on {', '.join(row['datasets'])})"
            if reason is None and "best_of" in row:
                run = best_member(row, dataset, metric, column["headline"], runs)
                if run is None:
                    reason = f"none of its runs ran on {dataset}"
            elif reason is None:
                run = runs.get((row["run"], dataset))
                if run is None:
                    raise ValueError(f"no metrics.json of run {row['run']!r} on {dataset!r}")
            summary = _cell_value(run, metric)
            if reason is None and summary is None:
                reason = {
                    "sparsity": "the model gives no attention",
                    "cost": f"{metric} not in the run's metrics.json",
                }.get(metric.split(".")[0], f"{metric} not computed for this task")
            reference = column["paper"]
            row_paper = row["paper"] or {"table": None, "row": None}
            paper_table = (row_paper["table"] or reference["table"]) if reference else ""
            records.append(
                {
                    "row": row["label"],
                    "experiment": row["experiment"] or "",
                    "run": (run or {}).get("experiment", "")
                    if "best_of" in row
                    else row["run"] or "",
                    "dataset": dataset,
                    "metric": metric,
                    **{
                        key: (summary or {}).get(key)
                        for key in ("point", "mean", "ci_low", "ci_high", "std", "n")
                    },
                    "paper_table": paper_table,
                    "paper_row": row_paper["row"] or "",
                    "paper_column": reference["column"] if reference else "",
                    "paper_value": (
                        paper_cell(paper, paper_table, row_paper["row"], reference["column"])
                        if reference and row_paper["row"]
                        else None
                    ),
                    "reason": reason or "",
                    "protocol": run.get("protocol", "clean") if run else "",
                    "encoder_weights": (run or {}).get("provenance", {}).get("encoder_weights"),
                }
            )
    return pd.DataFrame(records)


def _ours(record: Mapping, decimals: int) -> str:
    if record["reason"]:
        return record["reason"]
    if record["metric"].startswith("cost."):
        point = record["point"]
        return point if isinstance(point, str) else f"{point:.4g}"
    return (
        f"{100 * record['mean']:.{decimals}f} "
        f"[{100 * record['ci_low']:.{decimals}f}, {100 * record['ci_high']:.{decimals}f}]"
    )


def _wide(cells: pd.DataFrame, plan: Mapping) -> tuple[list[str], list[list[str]]]:
    """Header and rows: Method, then per column ours and, where the paper has it, the paper's."""
    header = ["Method"]
    keys = []
    for column in plan["columns"]:
        metric = METRIC_LABEL.get(column["metric"], column["metric"])
        header.append(f"{column['dataset']} ({metric})")
        keys.append((column, False))
        if column["paper"]:
            header.append(f"paper: {column['paper']['table']} {column['paper']['column']}")
            keys.append((column, True))
    body = []
    for label, group in cells.groupby("row", sort=False):
        line = [label]
        for column, is_paper in keys:
            record = group[
                (group.dataset == column["dataset"]) & (group.metric == column["metric"])
            ].iloc[0]
            if is_paper:
                line.append(record["paper_value"] or "–")
            else:
                line.append(_ours(record, plan["decimals"]))
        body.append(line)
    return header, body


def _notes(cells: pd.DataFrame, plan: Mapping) -> list[str]:
    notes = [
        "Ours: bootstrap mean over test-set resamples ×100 with the 2.5 and 97.5 percentiles in "
        "brackets. Paper: the published value ± the published bootstrap std (the official code's "
        "±, not an interval); – where the paper has no such cell."
    ]
    if plan["note"]:
        notes.append(plan["note"])
    if any(column["metric"] == "sparsity" for column in plan["columns"]):
        notes.append(DEFINITION)
    notes += encoder_provenance(zip(cells["row"], cells["encoder_weights"], strict=True))
    if cells["protocol"].any():
        notes.append(protocol_note(zip(cells["row"], cells["protocol"], strict=True)))
    return notes


def _latex(text: str) -> str:
    for char, escaped in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"),
                          ("_", r"\_"), ("#", r"\#"), ("$", r"\$"), ("±", r"$\pm$"),
                          ("×", r"$\times$"), ("–", "--")]:  # fmt: skip
        text = text.replace(char, escaped)
    return text


def render_table(name: str, plan: Mapping, cells: pd.DataFrame, out_dir: Path) -> None:
    """results/tables/<name>.csv (long, every number), .md and .tex (wide, as in the paper)."""
    cells.drop(columns="encoder_weights").to_csv(
        out_dir / f"{name}.csv", index=False, float_format="%.6g"
    )
    header, body = _wide(cells, plan)
    notes = _notes(cells, plan)
    markdown = [f"# {plan['title']}", "", "| " + " | ".join(header) + " |"]
    markdown.append("|" + "---|" * len(header))
    markdown += ["| " + " | ".join(line) + " |" for line in body]
    (out_dir / f"{name}.md").write_text("\n".join([*markdown, "", *notes]) + "\n")
    tex = [
        r"\begin{table}",
        r"\centering",
        rf"\caption{{{_latex(plan['title'])}. {_latex(' '.join(notes))}}}",
        r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(_latex(h) for h in header) + r" \\",
        r"\midrule",
        *[" & ".join(_latex(cell) for cell in line) + r" \\" for line in body],
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    (out_dir / f"{name}.tex").write_text("\n".join(tex) + "\n")


def write_declared_tables(
    runs: list[dict],
    plans: Mapping[str, Mapping],
    out_dir: str | Path,
    attention: Mapping[tuple[str, str], list[str | Path]] | None,
    n_boot: int,
    seed: int,
) -> dict[str, pd.DataFrame]:
    """Render every declared table from the runs' metrics.json contents; ``attention`` maps
    (run, dataset) to its folds' attention.npz, for sparsity columns."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_key = {(run["experiment"], run["dataset"]): run for run in runs}
    for key, files in (attention or {}).items():
        if key not in by_key:
            raise ValueError(f"attention of {key} given without its metrics.json")
        summary = sparsity_summary(files, n_boot, seed)
        if summary is not None:
            by_key[key]["metrics"]["sparsity"] = summary
    paper = load_paper_values()
    rendered = {}
    for name, plan in plans.items():
        rendered[name] = table_cells(plan, by_key, paper)
        render_table(name, plan, rendered[name], out_dir)
    return rendered


def attention_by_run(files: Iterable[str | Path]) -> dict[tuple[str, str], list[Path]]:
    """Group results/runs/<dataset>/<run>/fold<k>/attention.npz paths by (run, dataset)."""
    grouped: dict[tuple[str, str], list[Path]] = {}
    for path in map(Path, files):
        run_dir = path.parent.parent
        grouped.setdefault((run_dir.name, run_dir.parent.name), []).append(path)
    return grouped
