"""The paper's figures, one module per kind, each run by its own rule
(``python -m abmilx.report.figures.<kind>``) so that editing one kind reruns only its figures.

``plan`` resolves the config's ``figures:`` block at parse time; ``draw`` holds what the kinds
share. A kind's module reads the JSON plan of one figure and writes ``<name>.png`` and ``.pdf``.
"""

KINDS = (
    "umap_features",
    "attention_heatmaps",
    "attention_dynamics",
    "performance_vs_cost",
    "km_curves",
    "sparsity_vs_features",
)
