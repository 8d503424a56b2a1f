"""Bad tables are refused with the column and the row; good ones get their types inferred."""

from __future__ import annotations

import pandas as pd
import pytest

from forgeml.data.checks import check_table
from forgeml.data.sources import read_table
from forgeml.errors import ForgeError


def table(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_missing_target_column_lists_the_columns():
    with pytest.raises(ForgeError, match=r"target column .*'label' is not in the data; columns are: a, b"):
        check_table(table(a=[1, 2], b=[3, 4]), "label")


def test_non_numeric_value_in_numeric_column_names_row_and_column():
    ages = [str(20 + i) for i in range(20)]
    ages[2] = "abc"
    frame = table(age=ages, y=[0, 1] * 10)
    with pytest.raises(ForgeError, match=r"column 'age' is numeric but row 3 holds 'abc'"):
        check_table(frame, "y")


def test_declared_numeric_column_is_checked_too():
    frame = table(code=["a1", "b2", "c3", "d4"], y=[0, 1, 0, 1])
    with pytest.raises(ForgeError, match=r"column 'code' is numeric but row 1 holds 'a1' \(4 such rows\)"):
        check_table(frame, "y", declared={"code": "numeric"})


def test_single_class_is_refused():
    with pytest.raises(ForgeError, match="target column 'y' has a single class"):
        check_table(table(a=[1.0, 2.0, 3.0], y=["yes", "yes", "yes"]), "y")


def test_missing_target_value_names_the_row():
    with pytest.raises(ForgeError, match="target column 'y' is empty in row 2"):
        check_table(table(a=[1.0, 2.0, 3.0], y=["a", None, "b"]), "y")


def test_header_only_table_is_refused():
    with pytest.raises(ForgeError, match="no rows"):
        check_table(table(a=[], y=[]), "y")


def test_empty_file_is_refused(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ForgeError, match="is empty"):
        read_table(str(empty))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ForgeError, match="data file not found"):
        read_table(str(tmp_path / "nope.csv"))


def test_unknown_declared_feature_is_refused():
    with pytest.raises(ForgeError, match=r"feature \(data.features\) 'agee' is not in the data"):
        check_table(table(age=[1, 2], y=[0, 1]), "y", declared={"agee": "numeric"})


def test_types_and_task_are_inferred():
    frame = table(
        age=[30.0, None, 50.0, 41.0],
        city=["Oslo", "Rome", None, "Oslo"],
        flag=[True, False, True, True],
        skip=[1, 2, 3, 4],
        y=["a", "b", "a", "b"],
    )
    checked, schema = check_table(frame, "y", drop=["skip"])
    assert schema.features == {"age": "numeric", "city": "categorical", "flag": "categorical"}
    assert schema.task == "classification"
    assert list(checked.columns) == ["age", "city", "flag", "y"]


def test_float_target_with_many_values_is_regression():
    frame = table(x=list(range(30)), y=[v * 1.5 + 0.25 for v in range(30)])
    assert check_table(frame, "y")[1].task == "regression"


def test_declared_type_wins_over_inference():
    frame = table(zip=[1000, 2000, 1000, 3000], y=[0, 1, 0, 1])
    _, schema = check_table(frame, "y", declared={"zip": "categorical"})
    assert schema.features["zip"] == "categorical"
