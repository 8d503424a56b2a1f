"""Two "nodes" on 127.0.0.1 (one CPU process each, gloo) train one model: the same one that a
single process trains with the same effective batch.

Each node is a real `forgeml train` process started with Lightning's cluster variables
(MASTER_ADDR, MASTER_PORT, NODE_RANK), as on two machines. With 2 nodes x batch 32, each step
averages the gradients of the two halves of the 64 rows a single node takes in one batch of 64
(the data module shards every permutation by rank), so the weights agree up to float rounding.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from forgeml.io import read_json
from forgeml.stages import prepare
from tests.helpers.config import compose_config, package_config_env
from tests.helpers.ports import free_ports

# 1000 synthetic rows: 700 train, 150 validation (even: each node validates 75, no padding);
# 10 batches of 64 an epoch leave out the last, partial batch, which the two sides would split differently
DATA = ["data=synthetic", "data.source.n_samples=1000", "trainer.limit_train_batches=10"]
COMMON = [
    *DATA,
    "trainer.max_epochs=3",
    "model.dropout=0.0",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "logger=none",
]


def forgeml_train(workdir: Path, overrides: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [os.path.join(os.path.dirname(sys.executable), "forgeml"), "train", *overrides]
    environment = package_config_env(**(env or {}))
    return subprocess.Popen(
        command, cwd=workdir, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def trained_weights(workdir: Path) -> dict[str, torch.Tensor]:
    return torch.load(workdir / "models" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_two_nodes_train_the_model_one_node_trains_with_the_same_effective_batch(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    for workdir in (single, multi):
        prepare.run(compose_config(workdir, *DATA))
        # the stage wrote under workdir/data: the processes below run in workdir with relative paths
    finished(forgeml_train(single, [*COMMON, "data.batch_size=64"]))

    port = free_ports(1)[0]
    nodes = [
        forgeml_train(
            multi,
            [
                *COMMON,
                "data.batch_size=32",
                "trainer=ddp",
                "trainer.devices=1",
                "trainer.num_nodes=2",
                f"hydra.run.dir=logs/node{rank}",
            ],
            {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(rank)},
        )
        for rank in (0, 1)
    ]
    outputs = [finished(node) for node in nodes]
    assert "MEMBER: 1/2" in outputs[0] and "MEMBER: 2/2" in outputs[1]

    one, two = read_json(single / "models" / "model.json"), read_json(multi / "models" / "model.json")
    assert two["config"]["trainer"]["num_nodes"] == 2
    assert two["metrics"]["val/accuracy"] == one["metrics"]["val/accuracy"]
    assert two["metrics"]["val/loss"] == pytest.approx(one["metrics"]["val/loss"], rel=1e-4)
    weights_one, weights_two = trained_weights(single), trained_weights(multi)
    assert torch.load(multi / "models" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 30
    for name, value in weights_one.items():
        assert torch.allclose(weights_two[name], value, atol=1e-5), name
