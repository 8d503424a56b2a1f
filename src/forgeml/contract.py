"""The archive's contract: every name that a model archive, the servers that run it and the
readers of what it writes must agree on, written once.

It ships inside every archive beside the handler's modules, which run in a serving worker
without forgeml installed, so it imports the standard library only. forgeml's own code
(packaging, the server lifecycle, `forgeml predict`, `forgeml monitor`) imports the same names
from here.
"""

from __future__ import annotations

import os

# the files inside an archive, beside the exported program
PROGRAM_FILE = "model.pt2"
SCHEMA_FILE = "input_schema.json"
PREPROCESSOR_FILE = "preprocessor.json"
DECISION_FILE = "decision_threshold.json"
# the training data's contract (forgeml/data/contract.py), which new training data is held to
DATA_CONTRACT_FILE = "data_contract.json"
MODEL_CONFIG_FILE = "model-config.yaml"
# ... and its Python modules: TorchServe's adapter, the backend-free modules it loads, and the
# preprocessing arithmetic training uses (forgeml/data/transform.py)
HANDLER_FILE = "handler.py"
REQUEST_FILE = "request.py"
INFERENCE_FILE = "inference.py"
MONITORING_FILE = "monitoring.py"
TRANSFORM_FILE = "transform.py"
# this very file, under the name the adapter loads it by (handler.py, CONTRACT_FILE)
CONTRACT_FILE = os.path.basename(__file__)

# where the server tells its workers to write the inference log ...
LOG_DIR_VARIABLE = "FORGEML_INFERENCE_LOG_DIR"
# ... and the file holding the key of the hashes it writes for `monitor.hash` columns
LOG_KEY_VARIABLE = "FORGEML_INFERENCE_LOG_KEY"
# the log settings a running server's workers take in place of their archive's (sample rate,
# rotation), in that directory: `forgeml serve configure` writes it, each worker re-reads it
LOG_SETTINGS_FILE = "log-settings.json"
# the sample rate that logs every request until the window holds monitor.min_samples records
AUTO_SAMPLE_RATE = "auto"

# the handler's Prometheus metrics as (type, name, unit, own dimensions): in prometheus mode
# TorchServe shows declared metrics only, and takes dimension values by position
PREDICTIONS = "forgeml_predictions"
PREDICTED_VALUE = "forgeml_predicted_value"
REJECTED = "forgeml_rejected_requests"
OUT_OF_RANGE = "forgeml_out_of_range_values"
LOG_ERRORS = "forgeml_inference_log_errors"
# the gateway's own counter, beside the handler's on the metrics port: answers by model, by who
# answered (production, or a rollout's candidate) and by HTTP status
GATEWAY_ANSWERS = "forgeml_gateway_answers_total"
HANDLER_METRICS = (
    ("counter", PREDICTIONS, "count", ("Class",)),
    ("counter", REJECTED, "count", ("Reason",)),
    ("counter", OUT_OF_RANGE, "count", ("Feature",)),
    ("counter", LOG_ERRORS, "count", ()),
    ("histogram", PREDICTED_VALUE, "value", ()),
)

# why a request was answered 400: the `Reason` of forgeml_rejected_requests and the `rejected`
# field of its inference-log line
REJECTION_REASONS = (
    "malformed_json",
    "not_an_object",
    "wrong_type",
    "not_finite",
    "missing_feature",
    "out_of_range",
    "empty_instances",
    "too_many_instances",
)

# a scored table's per-class probability columns: `forgeml predict` writes them, the inference
# log's reader flattens a line's {"probabilities": {class: p}} into them, the estimate reads them
PROBABILITY_PREFIX = "probability_"


def probability_column(label: object) -> str:
    """The column holding the predicted probability of class `label`."""
    return f"{PROBABILITY_PREFIX}{label}"
