"""predict: batch predictions for a table, with the model artifact in models/.

    forgeml predict input=new_rows.csv output=scored.parquet

Writes the input columns as they were plus `prediction` (the label, or the value), for
classification one `probability_<class>` column per class, and `error` (why a row got no
prediction, naming the column: "age: not a number: 'unknown'"). A binary model's decision
threshold (reports/decision_threshold.json, picked by `evaluate` for this model) decides
`prediction`. Same preprocessing and program as the endpoint; vectorised and chunked, so the
input may be larger than memory. Rows that cannot be scored are kept, their cells as written,
without a prediction, and reported by row number. Column types: serving/batch.py.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from forgeml.errors import ForgeError
from forgeml.models.artifact import ModelArtifact
from forgeml.models.rare_classes import read_decision
from forgeml.serving.batch import predict_file

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.input or not cfg.output:
        raise ForgeError("say what to score and where: forgeml predict input=<file> output=<file>")
    artifact = ModelArtifact.load(cfg.paths.models_dir)
    # the threshold evaluate picked for this model, as the archive carries it to the endpoint
    decision = read_decision(cfg.paths.reports_dir, artifact.manifest["model_hash"])
    summary = predict_file(artifact, cfg.input, cfg.output, decision=decision)
    if summary["bad_rows"]:
        log.warning(
            "%d row(s) got no prediction, e.g. %s", summary["bad_rows"], summary["bad_row_examples"][:5]
        )
    return summary
