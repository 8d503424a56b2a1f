"""What a fresh Python process imports for a job: the commands that should start fast stay clear
of the heavy libraries."""

from __future__ import annotations

import subprocess
import sys


def test_distance_tests_without_missing_values_import_no_scipy():
    """scipy.stats costs a monitor run a second of imports: only KS and a chi-squared on two or
    more categories (missing values included) load it."""
    code = (
        "import sys, numpy as np, pandas as pd;"
        "from forgeml.monitoring.drift import *;"
        "rng = np.random.default_rng(0);"
        "refs = {'x': NumericReference.from_values(rng.normal(size=5000)),"
        " 'c': CategoricalReference.from_values(rng.choice(list('abc'), 5000))};"
        "current = pd.DataFrame({'x': rng.normal(size=2000), 'c': rng.choice(list('abd'), 2000)});"
        "drift = dataset_drift(refs, current, DriftSettings());"
        "print(sorted(e['test'] for e in drift['features'].values()), 'scipy' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["['jensenshannon',", "'wasserstein']", "False"]


def test_help_and_compose_import_no_heavy_library(tmp_path):
    """--help and compose stay fast by never importing torch, Lightning, DVC or wandb."""
    code = (
        "import sys; from forgeml import cli;"
        "assert cli.main(['--help']) == 0; assert cli.main(['compose', 'seed=7']) == 0;"
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'dvc', 'wandb') if m in sys.modules];"
        "print('HEAVY', heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    assert "seed: 7" in (tmp_path / "params.yaml").read_text()
