"""A registered version's archive answering logged requests as its endpoint would have.

The registry's copy of the archive (checked against its sha256) is read in place: its exported
program, its fitted preprocessing and its decision threshold (if it carries one). The logged
inputs (raw values, as the requests sent them) are scored by the code `forgeml predict` uses
(serving/batch.py: transform.py's encoding, the program, the threshold), a chunk of rows at a
time; a request the version cannot score gets no answer, as its endpoint would answer 400.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from forgeml import contract
from forgeml.errors import ForgeError
from forgeml.models.artifact import ModelArtifact
from forgeml.serving.batch import CHUNK_ROWS, RowErrors, output_types, predict_chunk
from forgeml.serving.registry import Registry


@dataclass
class ArchivedVersion:
    """What a version's endpoint answers with: its program and preprocessing (`artifact`) and
    its decision threshold (None: the most probable class)."""

    model: str
    version: str
    artifact: ModelArtifact
    decision: dict[str, Any] | None

    @property
    def spec(self) -> dict[str, Any]:
        return self.artifact.spec


def load_version(registry: Registry, model: str, version: str) -> ArchivedVersion:
    """`version` of `model` from the registry's copy of its archive."""
    with zipfile.ZipFile(registry.verified_archive(model, version)) as archive:
        names = set(archive.namelist())
        spec = json.loads(archive.read(contract.PREPROCESSOR_FILE))
        decision = (
            json.loads(archive.read(contract.DECISION_FILE)) if contract.DECISION_FILE in names else None
        )
        program = torch.export.load(io.BytesIO(archive.read(contract.PROGRAM_FILE))).module()
    return ArchivedVersion(model, version, ModelArtifact({}, spec, program), decision)


def check_replayable(version: ArchivedVersion, columns: pd.Index, withheld: dict[str, list[str]]) -> None:
    """Every feature of the version is in the log as it was sent: `withheld` maps the keys that
    keep a column out of the log, or alter it (monitor.redact, monitor.hash), to their columns."""
    features = [feature["name"] for feature in version.spec["features"]]
    for key, names in withheld.items():
        hidden = [name for name in features if name in names]
        if hidden:
            raise ForgeError(
                f"{key} keeps {', '.join(hidden)} out of the inference log as sent: {version.model} "
                f"{version.version} cannot be replayed on it"
            )
    missing = [name for name in features if name not in columns]
    if missing:
        raise ForgeError(
            f"the logged requests lack {version.model} {version.version}'s feature(s) {', '.join(missing)}"
        )


def score(version: ArchivedVersion, requests: pd.DataFrame) -> pd.DataFrame:
    """The version's answers to `requests` (same index): `prediction` (None where it could not
    score a request) and, for a classifier, one probability column per class."""
    features = [feature["name"] for feature in version.spec["features"]]
    answer_columns = [name for name in output_types(version.spec) if name not in features]
    chunks = (requests.iloc[start : start + CHUNK_ROWS] for start in range(0, len(requests), CHUNK_ROWS))
    # a request it cannot score is left unanswered (the endpoint's 400); which one is not reported
    answers = [
        predict_chunk(version.artifact, chunk[features], 1, RowErrors(len(chunk)), decision=version.decision)
        for chunk in chunks
    ]
    if not answers:
        return pd.DataFrame(columns=answer_columns, index=requests.index)
    return pd.concat(answers)[answer_columns]
