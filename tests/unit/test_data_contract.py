"""The data contract: `prepare` writes it, and refuses new data that breaks the contract of the
model it would replace, naming every broken column, unless the change is accepted."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from forgeml.contract import DATA_CONTRACT_FILE
from forgeml.data.checks import check_table
from forgeml.data.contract import ContractBroken, Tolerances, broken_contract, contract_breaks, data_contract
from forgeml.data.preprocessing import fit_preprocessor
from forgeml.data.transform import MISSING_CATEGORY
from forgeml.errors import EXIT_USAGE
from forgeml.io import read_json, write_json
from forgeml.layout import DATA_CONTRACT, split_file
from forgeml.monitoring.profile import build_profile
from forgeml.monitoring.signals import with_signals
from forgeml.serving.archive import input_schema
from forgeml.serving.registry import Registry
from forgeml.stages import prepare
from tests.helpers.registry import entry


def table(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.uniform(20, 60, rows),
            "city": rng.choice(["paris", "lyon"], rows),
            "label": rng.choice(["yes", "no"], rows),
        }
    )


def prepared(frame: pd.DataFrame, target: str = "label") -> tuple[dict, dict]:
    """The preprocessing and the contract `prepare` writes, of `frame` taken whole as the train split."""
    checked, schema = check_table(frame, target)
    preprocessor = fit_preprocessor(checked, schema)
    train, signals = with_signals(checked, preprocessor)
    return preprocessor, data_contract(
        "csv", preprocessor, build_profile(train, replace(schema, features=signals))
    )


def contract_of(frame: pd.DataFrame, target: str = "label") -> dict:
    return prepared(frame, target)[1]


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), color=128).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_contract_holds_kinds_categories_ranges_missing_rates_text_length_and_image_size():
    frame = pd.DataFrame(
        {
            "age": [20.0, 30.0, None, 50.0],
            "city": ["paris", "paris", "lyon", None],
            "opened": ["2024-01-01", "2024-06-01", "2024-03-01", "2024-02-01"],
            "note": ["a short note", "two words", None, "one more long note"],
            "photo": [png(4, 3), png(8, 6), png(4, 3), None],
            "label": ["yes", "no", "yes", "no"],
        }
    )
    columns = contract_of(frame)["columns"]
    assert columns["age"] == {"type": "numeric", "missing_rate": 0.25, "ranges": {"value": [20.0, 50.0]}}
    assert columns["city"] == {
        "type": "categorical",
        "missing_rate": 0.25,
        "categories": {"lyon": 0.25, "paris": 0.5},
    }
    assert columns["opened"]["type"] == "datetime"
    assert columns["opened"]["ranges"]["timestamp"] == [
        pd.Timestamp("2024-01-01").timestamp(),
        pd.Timestamp("2024-06-01").timestamp(),
    ]
    assert columns["note"] == {"type": "text", "missing_rate": 0.25, "ranges": {"length": [2.0, 4.0]}}
    assert columns["photo"] == {
        "type": "image",
        "missing_rate": 0.25,
        "ranges": {"width": [4.0, 8.0], "height": [3.0, 6.0]},
    }
    assert columns["label"] == {
        "type": "categorical",
        "missing_rate": 0.0,
        "categories": {"no": 0.5, "yes": 0.5},
    }


def test_the_served_input_schema_publishes_the_contracts_columns_kinds_ranges_and_categories():
    """Both come from the same fit of the train split: the endpoint's input schema and the
    contract prepare holds new data to describe one table."""
    frame = table()
    frame.loc[:4, "city"] = None
    preprocessor, contract = prepared(frame)
    schema = {feature["name"]: feature for feature in input_schema(preprocessor, 5)["features"]}
    columns = {name: column for name, column in contract["columns"].items() if name != contract["target"]}
    assert {name: feature["type"] for name, feature in schema.items()} == {
        name: column["type"] for name, column in columns.items()
    }
    assert [schema["age"]["min"], schema["age"]["max"]] == columns["age"]["ranges"]["value"]
    assert set(schema["city"]["categories"]) - {MISSING_CATEGORY} == set(columns["city"]["categories"])


def test_data_from_the_same_source_keeps_the_contract():
    assert contract_breaks(contract_of(table(seed=0)), contract_of(table(seed=1))) == []


def test_a_column_gone_and_a_new_column_are_named():
    renamed = table().rename(columns={"city": "town"})
    assert contract_breaks(contract_of(table()), contract_of(renamed)) == [
        "column 'city' is gone (it was categorical)",
        "column 'town' is new (categorical)",
    ]


def test_a_changed_kind_is_named():
    coded = table().assign(city=lambda frame: frame["city"].map({"paris": 75.0, "lyon": 69.0}))
    assert contract_breaks(contract_of(table()), contract_of(coded)) == [
        "column 'city' was categorical, is now numeric"
    ]


def test_a_column_the_config_drops_or_declares_is_a_deliberate_change():
    coded = table().assign(city=lambda frame: frame["city"].map({"paris": 75.0, "lyon": 69.0}))
    assert contract_breaks(contract_of(table()), contract_of(coded), chosen={"city"}) == []
    assert (
        contract_breaks(contract_of(table()), contract_of(table().drop(columns="city")), chosen={"city"})
        == []
    )


def test_new_categories_break_the_contract_above_their_tolerated_share():
    new = table()
    new.loc[:9, "city"] = "nice"  # 5 % of the rows
    (line,) = contract_breaks(contract_of(table()), contract_of(new))
    assert line.startswith("column 'city': new categories hold 5.0% of the rows") and "'nice' 5.0%" in line
    assert contract_breaks(contract_of(table()), contract_of(new), Tolerances(new_category_share=0.06)) == []


def test_a_range_widened_beyond_the_tolerance_is_named_and_one_within_it_passes():
    reference = contract_of(table())  # age within [20, 60]: 50 % widening reaches [0, 80]
    within, beyond = table(seed=1), table(seed=1)
    within.loc[0, "age"] = 79.0
    beyond.loc[0, "age"] = 81.0
    assert contract_breaks(reference, contract_of(within)) == []
    (line,) = contract_breaks(reference, contract_of(beyond))
    assert line.startswith("column 'age': values range [") and "data.contract.range_widening=0.5" in line
    assert contract_breaks(reference, contract_of(beyond), Tolerances(range_widening=1.0)) == []


def test_a_missing_rate_risen_beyond_the_tolerance_is_named():
    holed = table()
    holed.loc[:19, "age"] = None  # 10 % missing, from none
    (line,) = contract_breaks(contract_of(table()), contract_of(holed))
    assert line == (
        "column 'age': missing rate rose from 0.0% to 10.0% (data.contract.missing_rate_rise=0.05)"
    )
    assert contract_breaks(contract_of(table()), contract_of(holed), Tolerances(missing_rate_rise=0.1)) == []


def test_one_error_lists_every_break_and_says_how_to_accept_them():
    error = broken_contract(["column 'a' is gone (it was numeric)", "column 'b' is new (text)"], "the model")
    assert isinstance(error, ContractBroken) and error.exit_code == EXIT_USAGE
    assert "breaks 2 term(s) of the data contract of the model:\n  - column 'a' is gone" in str(
        error
    ) and "\n  - column 'b' is new" in str(error)
    assert "data.contract.accept=true" in str(error)


def csv_config(make_config, tmp_path, frame: pd.DataFrame, *overrides: str):
    source = tmp_path / "raw.csv"
    frame.to_csv(source, index=False)
    return make_config("data=csv", f"data.path={source}", "data.target=label", *overrides)


def test_prepare_on_a_fresh_project_writes_the_contract(make_config, tmp_path):
    cfg = csv_config(make_config, tmp_path, table())
    prepare.run(cfg)
    written = read_json(split_file(cfg.paths.processed_dir, "train").parent / DATA_CONTRACT)
    assert set(written["columns"]) == {"age", "city", "label"}


def test_prepare_refuses_data_that_breaks_the_current_models_contract(make_config, tmp_path):
    cfg = csv_config(make_config, tmp_path, table())
    write_json(f"{cfg.paths.models_dir}/{DATA_CONTRACT}", contract_of(table(rows=140)))
    broken = table().drop(columns="city")
    broken.loc[:39, "age"] = None
    cfg = csv_config(make_config, tmp_path, broken)
    with pytest.raises(ContractBroken) as error:
        prepare.run(cfg)
    assert f"the model in {cfg.paths.models_dir}/" in str(error.value)
    assert "column 'city' is gone" in str(error.value) and "column 'age': missing rate rose" in str(
        error.value
    )
    assert not split_file(cfg.paths.processed_dir, "train").exists()  # nothing written


def test_accept_takes_a_deliberate_change_and_writes_the_new_contract(make_config, tmp_path, caplog):
    cfg = csv_config(make_config, tmp_path, table(), "data.contract.accept=true")
    write_json(f"{cfg.paths.models_dir}/{DATA_CONTRACT}", contract_of(table().drop(columns="city")))
    prepare.run(cfg)
    written = read_json(split_file(cfg.paths.processed_dir, "train").parent / DATA_CONTRACT)
    assert "city" in written["columns"]
    assert "data.contract.accept=true: accepted as a deliberate change" in caplog.text
    assert "  - column 'city' is new" in caplog.text


def test_another_data_set_is_not_held_to_the_models_contract(make_config, tmp_path):
    """`data=wine` after `data=breast_cancer` is another experiment, not a retrain on new data."""
    cfg = csv_config(make_config, tmp_path, table().rename(columns={"city": "town"}), "data.name=towns")
    write_json(f"{cfg.paths.models_dir}/{DATA_CONTRACT}", contract_of(table()))
    prepare.run(cfg)
    written = read_json(split_file(cfg.paths.processed_dir, "train").parent / DATA_CONTRACT)
    assert written["dataset"] == "towns" and "town" in written["columns"]


def test_the_serving_versions_contract_comes_before_the_models(make_config, tmp_path):
    """The registry's copy of the serving version's archive carries the contract new data must
    keep; models/ (here: a contract the new data keeps) is only the fallback."""
    cfg = csv_config(make_config, tmp_path, table().rename(columns={"city": "town"}))
    write_json(
        f"{cfg.paths.models_dir}/{DATA_CONTRACT}", contract_of(table().rename(columns={"city": "town"}))
    )
    registry = Registry(cfg.serve.model_store)
    registry.record(cfg.serve.model_name, entry("v1"))
    registry.record_event(cfg.serve.model_name, "v1", "deploy")
    archive = registry.archive_copy(cfg.serve.model_name, "v1")
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as written:
        written.writestr(DATA_CONTRACT_FILE, json.dumps(contract_of(table())))
    with pytest.raises(
        ContractBroken, match=r"(?s)contract of version v1 of 'csv' \(serving\):.*column 'city' is gone"
    ):
        prepare.run(cfg)
