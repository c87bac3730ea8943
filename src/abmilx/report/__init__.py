"""Report stage: the cohort QC table, the paper's tables and its figures."""
