"""The request contract of a forgeml model archive: what a request may hold, and the 400 it gets
otherwise. Shared by every serving backend (the TorchServe adapter is handler.py).

Request:  {"instances": [{feature: value, ...}, ...]} or a single record {feature: value, ...};
          an image feature's value is its PNG or JPEG file as base64 text. A model whose one
          feature is an image also takes the image itself as the body (raw bytes:
          `Content-Type: image/png`, or any body that is not JSON).
Response: {"predictions": [...]}, each {"id": ..., "label": ..., "probabilities": {class: p}}
          (classification) or {"id": ..., "value": x} (regression).

`id`: the request id of a record, its key in the inference log, by which delayed labels are
joined to it (`forgeml monitor monitor.labels=...`): the record's own `id` (a string or an
integer; not a feature, so neither checked as one nor passed to the model), else a new uuid4.

A feature that is absent, of the wrong type (a datetime that does not parse), or infinite; a
finite value the model cannot compute (inference.py); malformed JSON, or JSON Python cannot
decode (an integer beyond its digit limit, nesting beyond its recursion limit); an image that
does not decode, is neither PNG nor JPEG, or holds more pixels than its feature's `max_pixels`
in input_schema.json (read from its header, before any pixel is decoded); an empty or too long
`instances` list: HTTP 400 "Bad Request" with {"error", "field", "instance"} in the body (an
offending value quoted in at most MAX_QUOTED characters, never a Python object's repr). `null`
(and NaN, which Python's JSON accepts) is a missing value, imputed as in training; an unknown
category is the unknown bucket, as in training. Inside a dynamic batch a bad request fails
alone: the others are answered normally.

Imports the standard library only (Pillow when an image is checked); transform.py, the module
training uses, is handed in by the caller (see handler.py on how the archive's modules meet).
"""

from __future__ import annotations

import io
import json
import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

BAD_REQUEST, BAD_REQUEST_PHRASE, OK = 400, "Bad Request", 200
# how many characters of an offending value a 400's message quotes
MAX_QUOTED = 80
# what a numeric feature may hold (bool is its own type: not among them); a categorical may not
NUMBER_TYPES = frozenset({int, float, type(None)})
CONTAINER_TYPES = frozenset({dict, list})
# the image formats the input schema names (Pillow's names); any other is refused unread
IMAGE_FORMATS = ("PNG", "JPEG")
# a Python object's repr in an exception's text ("<_io.BytesIO object at 0x7f...>"): a 400 says
# what is wrong with the request, not where the worker keeps it
OBJECT_REPR = re.compile(r"<[^<>]*\bat 0x[0-9A-Fa-f]+>")


class RequestError(ValueError):
    """What is wrong with one request, and where: becomes its HTTP 400 body. `reason` is one of
    contract.REJECTION_REASONS, the label of the rejected-requests metric."""

    def __init__(self, reason: str, message: str, field: str | None = None, instance: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.instance = instance

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field, "instance": self.instance}


@dataclass
class Batch:
    """The requests a backend batched together: each one's records, or why it was refused; and,
    once inference.py ran, the outputs and predictions of the accepted records, in order."""

    requests: list[list[dict[str, Any]] | RequestError]
    # per request, its records' ids (None for a refused request)
    ids: list[list[str] | None]
    outputs: np.ndarray | None = None
    predictions: list[dict[str, Any]] | None = None
    # a classifier's decided class per accepted record (an index into the labels)
    classes: np.ndarray | None = None
    # per numeric feature: how many of the batch's values lie outside the training range
    out_of_range: np.ndarray | None = None

    def accepted(self) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """(position in the batch, records) of each request not refused."""
        for position, request in enumerate(self.requests):
            if not isinstance(request, RequestError):
                yield position, request

    def records(self) -> list[dict[str, Any]]:
        return [record for _, request in self.accepted() for record in request]

    def rejections(self) -> list[RequestError]:
        return [request for request in self.requests if isinstance(request, RequestError)]

    def refuse(self, position: int, error: RequestError) -> None:
        self.requests[position] = error
        self.ids[position] = None

    def refuse_incomputable(self, position: int, index: int, feature: dict[str, Any] | None) -> None:
        """Refuse request `position`: the model cannot compute its record `index` (request.incomputable)."""
        self.refuse(position, incomputable(self.requests[position][index], feature, index))

    def answers(self) -> list[tuple[int, str]]:
        """(HTTP status, JSON text) per request, encoded compactly: the detail of a 400 goes in
        its body, as a status line has to stay short."""
        answers, row = [], 0
        for request, ids in zip(self.requests, self.ids, strict=True):
            if isinstance(request, RequestError):
                answers.append((BAD_REQUEST, json.dumps(request.body())))
                continue
            predictions = self.predictions[row : row + len(request)]
            records = [{"id": i, **p} for i, p in zip(ids, predictions, strict=True)]
            answers.append((OK, json.dumps({"predictions": records})))
            row += len(request)
        return answers


class RequestContract:
    """The checks of input_schema.json: parses each body of a batch into checked records."""

    def __init__(self, schema: dict[str, Any], preprocessor: dict[str, Any], transform: ModuleType):
        self.schema = schema
        self.transform = transform
        features = schema["features"]
        self.numeric = [f["name"] for f in features if f["type"] == "numeric"]
        self.categorical = [f["name"] for f in features if f["type"] != "numeric"]
        self.dates = [f for f in preprocessor["features"] if f["type"] == "datetime"]
        self.images = {f["name"]: f["max_pixels"] for f in features if f["type"] == "image"}
        # the feature a raw-bytes body is, for a model whose one feature is an image
        self.raw_image = next(iter(self.images)) if len(features) == 1 and self.images else None

    def batch(self, bodies: list[Any]) -> Batch:
        """The batch of `bodies`, each parsed and checked, with its records' ids; never raises."""
        batch = Batch([self.parse(body) for body in bodies], [None] * len(bodies))
        for position, records in batch.accepted():
            try:
                batch.ids[position] = request_ids(records)
            except RequestError as error:
                batch.refuse(position, error)
        return batch

    def parse(self, body: Any) -> list[dict[str, Any]] | RequestError:
        """The request's records, each checked against the input schema; never raises."""
        try:
            records = instances(self.decode_body(body), self.schema["max_instances"])
            for index, record in enumerate(records):
                if not self.well_formed(record):
                    check_record(record, self.schema["features"], index)
                self.check_dates(record, index)
                if self.images:
                    self.check_images(record, index)
            return records
        except RequestError as error:
            return error

    def well_formed(self, record: Any) -> bool:
        """The common case, checked in one pass over the types; False sends the record to
        check_record, which finds what is wrong (or that nothing is) value by value."""
        if not isinstance(record, dict):
            return False
        try:
            numbers = [record[name] for name in self.numeric]
            categories = [record[name] for name in self.categorical]
        except KeyError:
            return False
        if not NUMBER_TYPES.issuperset(map(type, numbers)):
            return False
        try:
            # one C-level pass: raises on a null or an int beyond float64, is not finite on inf
            finite = math.isfinite(math.fsum(numbers))
        except (TypeError, OverflowError):
            return False
        return finite and CONTAINER_TYPES.isdisjoint(map(type, categories))

    def check_dates(self, record: dict[str, Any], index: int) -> None:
        """Each datetime value parses as training parsed it (transform.py), or the request is
        refused naming the feature."""
        for feature in self.dates:
            name = feature["name"]
            try:
                self.transform.parse_datetime(record[name], feature.get("format"))
            except ValueError as error:
                raise RequestError(
                    "wrong_type", f"feature '{name}' is datetime: {error}", field=name, instance=index
                ) from None

    def decode_body(self, body: Any) -> Any:
        """The JSON payload; or, for a model whose one feature is an image, a body that is not
        JSON is that image (a PNG or JPEG is not even UTF-8)."""
        if self.raw_image is None or not isinstance(body, bytes | bytearray):
            return decode_json(body)
        try:
            return decode_json(body)
        except RequestError:
            return {self.raw_image: bytes(body)}

    def check_images(self, record: dict[str, Any], index: int) -> None:
        """Each image of `record` decodes (null is missing: the mean image, as in training); it
        stays decoded in the record, for the encoding and the log's signals to use."""
        for name, max_pixels in self.images.items():
            if record[name] is not None:
                try:
                    record[name] = decode_image(self.transform.image_bytes(record[name]), max_pixels)
                except ValueError as error:
                    raise RequestError(
                        "wrong_type", f"feature '{name}' is an image: {error}", field=name, instance=index
                    ) from None


def decode_image(data: bytes, max_pixels: int) -> Any:
    """The decoded PIL image of a PNG or JPEG of at most `max_pixels` pixels, else ValueError.
    The size is read from the header first: a small file can unpack to gigabytes of pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # reads the header only
        if image.width * image.height > max_pixels:
            raise ValueError(
                f"{image.width}x{image.height} is {image.width * image.height} pixels, more than "
                f"the {max_pixels} this model takes"
            )
        image.load()
    except UnidentifiedImageError:
        raise ValueError(f"not a decodable image: only {' and '.join(IMAGE_FORMATS)} are accepted") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"not a decodable image ({OBJECT_REPR.sub('the image', str(error))})") from None
    return image


def request_ids(records: list[dict[str, Any]]) -> list[str]:
    """Each record's own `id`, or a new one where it has none."""
    ids = []
    for index, record in enumerate(records):
        given = record.get("id")
        if given is None:
            ids.append(uuid.uuid4().hex)
        elif isinstance(given, str | int) and not isinstance(given, bool):
            ids.append(str(given))
        else:
            raise RequestError(
                "wrong_type", "`id` must be a string or an integer", field="id", instance=index
            )
    return ids


def decode_json(body: Any) -> Any:
    """A backend may hand over JSON already decoded, or the body's bytes or text."""
    if isinstance(body, bytes | bytearray):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("malformed_json", "the request body is not UTF-8 text") from None
    if isinstance(body, str):
        try:
            return json.loads(body)
        except RecursionError:
            raise RequestError("malformed_json", "malformed JSON: nested too deeply") from None
        except ValueError as error:  # JSONDecodeError, or an integer beyond Python's digit limit
            raise RequestError("malformed_json", f"malformed JSON: {error}") from None
    return body


def instances(payload: Any, max_instances: int) -> list[dict[str, Any]]:
    """The list of records: `instances`, or the payload itself when it is one record."""
    if not isinstance(payload, dict):
        raise RequestError("not_an_object", 'expected a JSON object: {"instances": [...]} or one record')
    if "instances" not in payload:
        return [payload]
    records = payload["instances"]
    if not isinstance(records, list):
        raise RequestError("wrong_type", "`instances` must be a list of records", field="instances")
    if not records:
        raise RequestError("empty_instances", "`instances` is empty", field="instances")
    if len(records) > max_instances:
        raise RequestError(
            "too_many_instances",
            f"too many instances: {len(records)} > {max_instances} per request",
            field="instances",
        )
    return records


def check_record(record: Any, features: list[dict[str, Any]], index: int) -> None:
    if not isinstance(record, dict):
        raise RequestError("not_an_object", "each instance must be a JSON object", instance=index)
    for feature in features:
        name = feature["name"]
        if name not in record:
            raise RequestError("missing_feature", f"missing feature '{name}'", field=name, instance=index)
        value = record[name]
        if feature["type"] == "numeric":
            check_number(value, name, index)
        elif feature["type"] != "image" and isinstance(value, dict | list):  # check_images: images
            raise RequestError(
                "wrong_type",
                f"feature '{name}' is {feature['type']}: expected a string or number, "
                f"got {type(value).__name__}",
                field=name,
                instance=index,
            )


def check_number(value: Any, name: str, index: int) -> None:
    """A number or null (imputed); bool is refused although Python counts it as an int."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(
            "wrong_type",
            f"feature '{name}' is numeric: expected a number or null, got {quoted(value)}",
            field=name,
            instance=index,
        )
    try:
        infinite = math.isinf(float(value))
    except OverflowError:  # an int beyond float64
        infinite = True
    if infinite:
        raise RequestError(
            "not_finite", f"feature '{name}' must be a finite number", field=name, instance=index
        )


def incomputable(record: dict[str, Any], feature: dict[str, Any] | None, index: int) -> RequestError:
    """The 400 of a record the model cannot compute: never a 200 with NaN in it."""
    if feature is None:
        return RequestError("out_of_range", "the model's output is not finite", instance=index)
    name = feature["name"]
    return RequestError(
        "out_of_range",
        f"feature '{name}' = {quoted(record[name])} is too extreme for the model: standardised "
        f"(training mean {feature['mean']:.6g}, std {feature['std']:.6g}) it overflows float32",
        field=name,
        instance=index,
    )


def quoted(value: Any) -> str:
    """`value` as JSON, cut to MAX_QUOTED characters: a message quotes, it does not echo."""
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):  # nested too deeply to quote
        text = f"a {type(value).__name__}"
    return text if len(text) <= MAX_QUOTED else f"{text[:MAX_QUOTED]}... ({len(text)} characters)"
