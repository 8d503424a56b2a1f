"""Short texts on small data: `forgeml train` with its default text model (and with
`model.text_encoder=transformer`) against tf-idf + logistic regression (scikit-learn's defaults),
on `data=short_names` (500 generated business names: 325 train, 75 validation, 100 test).

Each seed draws another data set; both sides train on its train split and are scored on its test
split. The line `ratio: <forgeml / baseline>` compares the mean test accuracies: 1 or more, the
default text model reaches the linear baseline. Hydra overrides after the options change
forgeml's side (trainer.max_epochs=60); each encoder's median training seconds are printed too.

    python bench/short_text.py [--seeds 5] [--transformer] [override ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from forgeml.layout import split_file
from forgeml.stages import evaluate, prepare, train

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def config(workdir: str, seed: int, *extra: str):
    overrides = [
        "data=short_names",
        f"seed={seed}",
        "trainer.enable_progress_bar=false",
        "logger=none",
        *(f"paths.{name}_dir={workdir}/{name}" for name in ("data", "models", "reports", "log")),
        *extra,
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def linear_baseline(processed_dir: str) -> float:
    train_rows, test_rows = (pd.read_parquet(split_file(processed_dir, s)) for s in ("train", "test"))
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(train_rows["name"], train_rows["kind"])
    return float(model.score(test_rows["name"], test_rows["kind"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--transformer", action="store_true", help="also model.text_encoder=transformer")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for forgeml's runs")
    args = parser.parse_args()
    encoders = ["mean", "transformer"] if args.transformer else ["mean"]
    scores: dict[str, list[float]] = {"baseline": [], **{encoder: [] for encoder in encoders}}
    seconds: dict[str, list[float]] = {encoder: [] for encoder in encoders}
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as workdir:
            cfg = config(workdir, seed)
            prepare.run(cfg)
            scores["baseline"].append(linear_baseline(cfg.paths.processed_dir))
            for encoder in encoders:
                cfg = config(workdir, seed, f"model.text_encoder={encoder}", *args.overrides)
                seconds[encoder].append(train.run(cfg)["fit/seconds"])
                scores[encoder].append(evaluate.run(cfg)["test/accuracy"])
        print(f"seed {seed}: " + ", ".join(f"{name} {values[-1]:.2f}" for name, values in scores.items()))
    for name, values in scores.items():
        print(f"{name}: mean test accuracy {statistics.mean(values):.3f} (min {min(values):.2f})")
    for encoder, values in seconds.items():
        print(f"{encoder}: median training {statistics.median(values):.1f} s")
    print(f"ratio: {statistics.mean(scores['mean']) / statistics.mean(scores['baseline']):.3f}")


if __name__ == "__main__":
    main()
