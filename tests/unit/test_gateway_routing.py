"""The gateway's routing decisions, without a server: sticky buckets, the routing key, the
answers compared in a shadow step, the ids a shadow copy carries, the keys it accepts."""

from __future__ import annotations

import json

from forgeml.serving import credentials
from forgeml.serving.gateway import answers_of, bucket, routing_key, with_ids


def test_one_caller_always_lands_in_one_bucket_and_callers_spread_evenly():
    assert bucket("m", "caller-7") == bucket("m", "caller-7")
    shares = [bucket("m", f"caller-{i}") < 25 for i in range(4000)]
    assert 0.22 < sum(shares) / len(shares) < 0.28


def test_the_routing_key_is_the_records_or_the_first_instances_field():
    assert routing_key(b'{"id": 5, "x": 1}', "id") == "5"
    assert routing_key(b'{"instances": [{"id": "a"}, {"id": "b"}]}', "id") == "a"
    assert routing_key(b'{"instances": [{"x": 1}]}', "id") is None
    assert routing_key(b"not json", "id") is None


def test_answers_compare_by_label_or_value():
    labelled = json.dumps({"predictions": [{"id": "1", "label": "yes", "probabilities": {"yes": 0.9}}]})
    assert answers_of(labelled.encode()) == ["yes"]
    assert answers_of(b'{"predictions": [{"id": "1", "value": 2.5}]}') == [2.5]
    assert answers_of(b"<html>") is None


def test_a_shadow_copy_carries_productions_ids():
    body = json.dumps({"instances": [{"x": 1}, {"x": 2, "id": "mine"}]}).encode()
    answer = json.dumps({"predictions": [{"id": "p1", "label": "a"}, {"id": "mine", "label": "b"}]}).encode()
    assert json.loads(with_ids(body, answer))["instances"] == [{"x": 1, "id": "p1"}, {"x": 2, "id": "mine"}]
    single = json.loads(with_ids(b'{"x": 1}', b'{"predictions": [{"id": "p9", "label": "a"}]}'))
    assert single == {"x": 1, "id": "p9"}
    assert with_ids(body, b'{"predictions": []}') == body


def test_keys_are_checked_against_their_hashes_and_kept_until_rotated(tmp_path):
    hashes = credentials.ensure(tmp_path)
    key = credentials.client_key(tmp_path, "inference")
    assert key not in json.dumps(hashes)
    assert credentials.accepts(hashes, "inference", f"Bearer {key}")
    assert not credentials.accepts(hashes, "management", f"Bearer {key}")
    assert not credentials.accepts(hashes, "inference", None)
    assert not credentials.accepts(hashes, "inference", f"Basic {key}")
    assert credentials.ensure(tmp_path) == hashes, "a second start keeps the keys"
    assert (tmp_path / credentials.KEY_FILE).stat().st_mode & 0o077 == 0
    rotated = credentials.ensure(tmp_path, rotate=True)
    assert rotated != hashes and not credentials.accepts(rotated, "inference", f"Bearer {key}")
