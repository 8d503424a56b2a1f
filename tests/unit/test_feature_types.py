"""Datetime and text features: inference, checks naming row and column, the numpy encoding that
ships in the archive, the net that embeds token ids, the handler's 400s and the drift signals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from forgeml.data import transform
from forgeml.data.checks import TypeRules, check_table
from forgeml.data.preprocessing import fit_preprocessor
from forgeml.data.sources import mixed
from forgeml.data.streaming import infer_schema
from forgeml.errors import ForgeError
from forgeml.models.artifact import ModelArtifact, check_exportable
from forgeml.models.nets import EMBEDDING_START_STD, EMBEDDING_STEP_SCALE, MLP, MeanEmbedding, MixedInputNet
from forgeml.serving import handler as handler_module
from forgeml.serving.archive import copy_modules, input_schema
from forgeml.serving.batch import predict_file
from tests.helpers.handler import make_context, serve

TYPES = {"amount": "numeric", "channel": "categorical", "opened": "datetime", "note": "text"}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return mixed(300, seed=0)


def test_inference_picks_numeric_categorical_datetime_and_text(table):
    _, schema = check_table(table, "target")
    assert schema.features == TYPES


def test_parquet_datetime_dtype_is_datetime_stored_as_iso_text():
    when = pd.to_datetime(["2024-01-02 03:04", None, "2024-07-01 00:00"])
    frame = pd.DataFrame({"when": when, "y": [0, 1, 0]})
    checked, schema = check_table(frame, "y")
    assert schema.features["when"] == "datetime"
    assert checked["when"].tolist()[0] == "2024-01-02T03:04:00" and checked["when"].isna().tolist()[1]


def test_declared_type_wins_over_inference(table):
    _, schema = check_table(table, "target", declared={"note": "categorical", "amount": "categorical"})
    assert schema.features["note"] == schema.features["amount"] == "categorical"


def test_repeated_short_strings_stay_categorical():
    frame = pd.DataFrame({"plan": ["gold plan", "basic plan"] * 50, "y": [0, 1] * 50})
    assert check_table(frame, "y")[1].features["plan"] == "categorical"


def test_unparsable_date_in_prepare_names_row_and_column(table):
    broken = table.copy()
    broken.loc[4, "opened"] = "next tuesday"
    with pytest.raises(ForgeError, match=r"column 'opened' is datetime but row 5 holds 'next tuesday'"):
        check_table(broken, "target", declared={"opened": "datetime"})


def test_date_format_forces_one_format():
    frame = pd.DataFrame({"day": ["13/01/2024", "14/02/2024", "15/03/2024"] * 10, "y": [0, 1, 1] * 10})
    rules = TypeRules(date_format="%d/%m/%Y")
    checked, schema = check_table(frame, "y", rules=rules)
    assert schema.features["day"] == "datetime"
    spec = fit_preprocessor(checked, schema, rules)
    assert spec["features"][0]["format"] == "%d/%m/%Y"
    month = transform.encode_features(spec, {"day": ["15/03/2024"]})[0, 1:3]
    np.testing.assert_allclose(
        month, [math.sin(2 * math.pi * 2 / 12), math.cos(2 * math.pi * 2 / 12)], atol=1e-6
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-03-05", "2024-03-05 00:00"),
        ("2024-03-05T10:30:00Z", "2024-03-05 10:30"),
        ("2024-03-05T12:30:00+02:00", "2024-03-05 10:30"),
        ("2024/03/05", "2024-03-05 00:00"),
        ("2024-03-05 10:30", "2024-03-05 10:30"),
        ("05.03.2024", "2024-03-05 00:00"),
    ],
)
def test_common_date_formats_parse_to_utc(text, expected):
    assert transform.parse_datetime(text).strftime("%Y-%m-%d %H:%M") == expected


def date_spec() -> dict:
    feature = {"name": "d", "type": "datetime", "format": None, "year_mean": 2024.0, "year_std": 2.0}
    return {"features": [feature], "input_dim": 10}


def test_datetime_encoding_is_cyclic_and_flags_missing():
    block = transform.encode_features(date_spec(), {"d": ["2023-12-31", "2024-01-01", None]})
    assert block.shape == (3, 10)
    december, january, missing = block
    assert december[0] == pytest.approx(-0.5) and january[0] == 0.0
    assert np.abs(december[1:9] - january[1:9])[:4].max() < 0.6  # month and day of year sit side by side
    assert missing.tolist() == [0.0] * 9 + [1.0] and december[9] == january[9] == 0.0


def text_spec(max_tokens: int = 4) -> dict:
    feature = {"name": "t", "type": "text", "max_tokens": max_tokens, "vocabulary": ["good", "bad", "!"]}
    return {"features": [feature], "input_dim": max_tokens}


def test_text_ids_are_padded_cut_and_mark_unknown_tokens():
    ids = transform.encode_features(text_spec(), {"t": ["Good, GOOD!", "bad", None, "a b c d e good"]})
    assert ids.dtype == np.float32
    assert ids.tolist() == [[2, 1, 2, 4], [3, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]


def test_token_ids_as_float32_are_exact_below_2_to_24():
    ids = np.arange(2**24 - 5, 2**24, dtype=np.int64)
    assert (ids.astype(np.float32).astype(np.int64) == ids).all()


def test_vocabulary_keeps_the_most_frequent_train_tokens(table):
    checked, schema = check_table(table, "target")
    spec = fit_preprocessor(checked, schema, TypeRules(vocab_size=5, max_tokens=12))
    note = next(f for f in spec["features"] if f["name"] == "note")
    counts = pd.Series([t for text in checked["note"] for t in transform.tokenize(text)]).value_counts()
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))  # ties: alphabetical
    assert note["vocabulary"] == [token for token, _ in ranked[:5]] and note["max_tokens"] == 12
    assert spec["input_dim"] == 1 + 3 + 10 + 12


def test_streaming_refuses_text_naming_the_column(table):
    batch = pa.RecordBatch.from_pandas(table, preserve_index=False)
    with pytest.raises(ForgeError, match=r"column 'opened' is datetime: data.streaming supports numeric"):
        infer_schema(batch, "target", "auto", {}, [])


@pytest.mark.parametrize("encoder", ["mean", "transformer"])
def test_mixed_input_net_exports_with_a_dynamic_batch_and_embeds_empty_text(encoder):
    net = MixedInputNet(MLP(3 + 8, 2, hidden=[8]), [0, 1, 2], [(3, 4, 10)], 8, encoder).eval()
    check_exportable(net, 7)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(net, (torch.zeros(4, 7),), dynamic_shapes={"x": {0: batch}}).module()
    rows = torch.tensor([[0.5, 1, 0, 2, 3, 0, 0], [0.1, 0, 1, 0, 0, 0, 0], [0, 0, 0, 9, 9, 9, 9]])
    out = program(rows)
    assert out.shape == (3, 2) and torch.isfinite(out).all()
    torch.testing.assert_close(out, net(rows))


def test_mean_encoder_averages_a_texts_token_vectors_leaving_padding_out_and_starts_near_zero():
    torch.manual_seed(0)
    encoder = MeanEmbedding(vocabulary=500, max_tokens=4, dim=16)
    vectors = encoder.embedding.weight.detach() * EMBEDDING_STEP_SCALE
    out = encoder(torch.tensor([[2.0, 3.0, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(out[:2], torch.stack([vectors[[2, 3]].mean(0), vectors[4]]))
    assert not out[2].any()
    assert vectors[1:].std() == pytest.approx(EMBEDDING_START_STD, rel=0.1)


@pytest.fixture(scope="module")
def typed_model_dir(tmp_path_factory) -> Path:
    """An archive directory whose model reads a datetime and a text feature."""
    directory = tmp_path_factory.mktemp("typed")
    spec = {
        "task": "classification",
        "target": "y",
        "features": [date_spec()["features"][0], text_spec()["features"][0]],
        "input_dim": 14,
        "labels": ["no", "yes"],
    }
    torch.manual_seed(0)
    net = MixedInputNet(
        torch.nn.Sequential(torch.nn.Linear(14, 2), torch.nn.Softmax(-1)), range(10), [(10, 4, 5)], 4
    )
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(net.eval(), (torch.zeros(2, 14),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, directory / "model.pt2")
    (directory / "preprocessor.json").write_text(json.dumps(spec))
    (directory / "input_schema.json").write_text(json.dumps(input_schema(spec, 5)))
    copy_modules(directory)
    return directory


@pytest.fixture(scope="module")
def typed_handler(typed_model_dir):
    service = handler_module.ForgemlHandler()
    service.initialize(make_context(typed_model_dir, requests=0))
    return service


def test_endpoint_takes_date_and_text_strings(typed_handler, typed_model_dir):
    good = {"d": "2024-05-01T08:00:00Z", "t": "good but bad"}
    [(status, answer)] = serve(typed_handler, typed_model_dir, json.dumps({"instances": [good, good]}))
    assert status == 200 and len(answer["predictions"]) == 2


@pytest.mark.parametrize(
    "value, message",
    [("someday", "feature 'd' is datetime: 'someday' is not a date"), (20240501, "expected a date as text")],
)
def test_unparsable_date_at_the_endpoint_is_a_400_naming_the_feature(
    typed_handler, typed_model_dir, value, message
):
    good = {"d": "2024-05-01", "t": "good"}
    bad = json.dumps({"instances": [good, {**good, "d": value}]})
    [(status, answer), (other, _)] = serve(typed_handler, typed_model_dir, bad, json.dumps(good))
    assert (status, answer["field"], answer["instance"], other) == (400, "d", 1, 200)
    assert message in answer["error"]


def test_text_given_as_an_object_is_a_400_naming_the_feature(typed_handler, typed_model_dir):
    [(status, answer)] = serve(typed_handler, typed_model_dir, json.dumps({"d": None, "t": {"x": 1}}))
    assert (status, answer["field"]) == (400, "t") and "feature 't' is text" in answer["error"]


def test_predict_reports_the_row_of_an_unparsable_date_and_scores_the_others(typed_model_dir, tmp_path):
    spec = json.loads((typed_model_dir / "preprocessor.json").read_text())
    program = torch.export.load(typed_model_dir / "model.pt2").module()
    artifact = ModelArtifact({}, spec, program)
    rows = pd.DataFrame({"d": ["2024-01-01", "soon", None], "t": ["good", "bad !", None]})
    rows.to_csv(tmp_path / "in.csv", index=False)
    summary = predict_file(artifact, tmp_path / "in.csv", tmp_path / "out.csv")
    scored = pd.read_csv(tmp_path / "out.csv")
    assert summary["bad_rows"] == 1
    assert summary["bad_row_examples"] == [{"row": 2, "field": "d", "error": "not a date: 'soon'"}]
    assert scored["prediction"].isna().tolist() == [False, True, False]


def test_an_mlp_without_dropout_has_no_dropout_layers_and_the_same_weights_names():
    """dropout=0 builds Identity layers (a Dropout(0) costs time each step); the layers keep
    their indices, so a checkpoint of one loads into the other."""
    bare, dropping = MLP(4, 2, hidden=[8, 8], dropout=0.0), MLP(4, 2, hidden=[8, 8], dropout=0.1)
    assert not any(isinstance(layer, torch.nn.Dropout) for layer in bare.modules())
    assert sum(isinstance(layer, torch.nn.Dropout) for layer in dropping.modules()) == 2
    dropping.load_state_dict(bare.state_dict())


def test_type_rules_default_to_the_composed_data_config(make_config):
    """TypeRules takes its defaults from DataConfig's schema, which a test holds equal to the
    YAML: so prepare's rules from the default config are the defaults."""
    from forgeml.stages.prepare import type_rules

    assert type_rules(make_config().data) == TypeRules()
