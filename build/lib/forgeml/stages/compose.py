"""compose: write the composed, resolved config to params.yaml, the snapshot DVC tracks.

Produces the same text as DVC's hydra integration (`dvc exp run -S ...`): compose, resolve,
dump as YAML.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from forgeml.io import write_text

PARAMS_FILE = "params.yaml"


def run(cfg: DictConfig, output: str = PARAMS_FILE) -> dict[str, Any]:
    cfg = cfg.copy()
    OmegaConf.resolve(cfg)
    write_text(output, OmegaConf.to_yaml(cfg))
    return {"params": output}
