"""Evaluation start-up stays light: many ablation runs are each evaluated in their own process."""

import subprocess
import sys

HEAVY = ("torchvision", "lifelines", "sklearn", "torch.utils.flop_counter")


def test_two_stage_prediction_imports_no_heavy_library_it_does_not_use():
    """Two-stage prediction needs torch and the MIL models only: no ResNet (torchvision), and
    the engine's validation metrics (lifelines, scikit-learn) load when validating."""
    code = (
        "import sys, abmilx.evaluation, abmilx.training, abmilx.two_stage.train, abmilx.models;"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
