"""What a local TorchServe is started with: config.properties, log4j2.xml and metrics.yaml.

config.properties is read by Java's `java.util.Properties`, so values are written with its
escapes (a backslash doubled, non-ASCII as \\uXXXX); `read_properties` reads them back the same
way. `allowed_urls` admits only a plain archive name directly inside the model store. The log4j
configuration logs at INFO into size-rotated files only, so no file grows without bound, and
leaves out the INFO lines TorchServe's frontend writes for every request (PER_REQUEST_LINES).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import yaml

from forgeml.contract import HANDLER_METRICS
from forgeml.errors import ForgeError

# after its own, every handler metric carries ModelVersion, then the ModelName and Level that
# TorchServe's add_counter/add_metric append (and the Hostname its frontend adds)
COMMON_DIMENSIONS = ["ModelVersion", "ModelName", "Level"]
# a plain archive name: no '/', no '%' (Java's file: URLs decode %2e%2e to '..'), no ':'
ARCHIVE_NAME = r"[A-Za-z0-9_.-]+\.mar"
# TorchServe's log4j loggers -> (file, pattern); every one goes to a size-rotated file
LOGGERS = {
    "ACCESS_LOG": ("access_log", "%d{ISO8601} - %m%n"),
    "MODEL_LOG": ("model_log", "%d{ISO8601} [%-5p] %t %c - %m%n"),
    "MODEL_METRICS": ("model_metrics", "%d{ISO8601} - %m%n"),
    "TS_METRICS": ("ts_metrics", "%d{ISO8601} - %m%n"),
    "org.pytorch.serve": ("ts_log", "%d{ISO8601} [%-5p] %t %c - %m%n"),
}
# the INFO lines TorchServe's frontend writes per request or batch (response timing, and an
# echo of every metric line a worker prints), by logger, as the start of their raw message
# (the format string): at 1,000 requests/s they fill a 10 MB ts_log within a minute, rotating
# away what matters (start-up, worker deaths), and each costs a synchronous file write. The
# access log and the Prometheus metrics keep what they said; model_log keeps the worker's
# one line per batch ("Backend received inference at").
PER_REQUEST_LINES = {
    "org.pytorch.serve": (
        "Looping backend response at: ",
        "Backend response time: ",
        "Sending response for jobId ",
        "result=",
    ),
}
PROPERTY_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}
PROPERTY_UNESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def allowed_urls(store: Path) -> str:
    """The one URL pattern TorchServe may register from: `file://<store>/<plain name>.mar`."""
    # every special character escaped, which Java's regex reads as Python's does; a comma
    # would split TorchServe's list of patterns, \x2c is one in both dialects
    escaped = re.escape(str(store)).replace(",", r"\x2c")
    return f"file://{escaped}/{ARCHIVE_NAME}"


def property_value(value: Any) -> str:
    """`value` as java.util.Properties.load reads it back unchanged."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    escaped = []
    for position, char in enumerate(text):
        if char in PROPERTY_ESCAPES:
            escaped.append(PROPERTY_ESCAPES[char])
        elif char == " " and position == 0:
            escaped.append("\\ ")  # load() skips leading whitespace
        elif not " " <= char <= "~":
            # load() reads ISO-8859-1: anything else as UTF-16 units
            units = char.encode("utf-16-be")
            escaped += [f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)]
        else:
            escaped.append(char)
    return "".join(escaped)


def render_properties(properties: dict[str, Any]) -> str:
    lines = ["# written by `forgeml serve start` from the `serve` config; edits are overwritten"]
    lines += [f"{key}={property_value(value)}" for key, value in properties.items()]
    return "\n".join(lines) + "\n"


def read_properties(text: str) -> dict[str, str]:
    """Key/value pairs of `render_properties` output, read as java.util.Properties reads them
    (comments, `key=value`, backslash escapes)."""
    pairs = {}
    for line in text.splitlines():
        stripped = line.lstrip()
        if not stripped or stripped[0] in "#!" or "=" not in stripped:
            continue
        key, value = stripped.split("=", 1)
        pairs[key.strip()] = unescape(value.lstrip())
    return pairs


def unescape(value: str) -> str:
    def replace(match: re.Match[str]) -> str:
        code, char = match.group(1), match.group(2)
        return chr(int(code, 16)) if code else PROPERTY_UNESCAPES.get(char, char)

    decoded = re.sub(r"\\(?:u([0-9a-fA-F]{4})|(.))", replace, value)
    # \uXXXX pairs outside the basic plane come back as surrogates
    return decoded.encode("utf-16", "surrogatepass").decode("utf-16")


def log4j_config(logs_dir: Path, max_bytes: int, backups: int) -> str:
    """log4j2.xml: INFO and above, every logger into its own file, rotated at `max_bytes`
    keeping `backups` old files; nothing on the console (its output would go unrotated)."""
    appenders = [
        f"""    <RollingFile name="{name}" fileName={quoteattr(str(logs_dir / f"{name}.log"))}
        filePattern={quoteattr(str(logs_dir / f"{name}.%i.log"))}>
      <PatternLayout pattern="{pattern}"/>
      <Policies><SizeBasedTriggeringPolicy size="{max_bytes}"/></Policies>
      <DefaultRolloverStrategy max="{backups}" fileIndex="min"/>
    </RollingFile>"""
        for name, pattern in LOGGERS.values()
    ]
    loggers = [
        f'    <Logger name="{logger}" level="info" additivity="false">'
        f'{per_request_filter(logger)}<AppenderRef ref="{name}"/></Logger>'
        for logger, (name, _) in LOGGERS.items()
    ]
    return "\n".join(
        [
            '<?xml version="1.0" encoding="UTF-8"?>',
            "<!-- written by `forgeml serve start` from the `serve` config -->",
            '<Configuration status="warn">',
            "  <Appenders>",
            *appenders,
            "  </Appenders>",
            "  <Loggers>",
            '    <Logger name="io.netty" level="error"/>',
            '    <Logger name="org.apache" level="off"/>',
            *loggers,
            '    <Root level="info"><AppenderRef ref="ts_log"/></Root>',
            "  </Loggers>",
            "</Configuration>",
            "",
        ]
    )


def per_request_filter(logger: str) -> str:
    """A log4j filter dropping `logger`'s PER_REQUEST_LINES, matched on the raw message, so
    nothing is formatted for them; '' for a logger without any."""
    if logger not in PER_REQUEST_LINES:
        return ""
    starts = "|".join(re.escape(start) for start in PER_REQUEST_LINES[logger])
    regex = quoteattr(f"(?s)(?:{starts}).*")
    return f'<RegexFilter regex={regex} useRawMsg="true" onMatch="DENY" onMismatch="NEUTRAL"/>'


def metrics_config() -> dict[str, Any]:
    """TorchServe's default metrics config with the forgeml handler's metrics added."""
    try:
        import ts
    except ImportError:
        raise ForgeError("TorchServe is not installed: pip install 'forgeml[serve]'") from None
    defaults = Path(ts.__file__).with_name("configs") / "metrics.yaml"
    config = yaml.safe_load(defaults.read_text(encoding="utf-8"))
    model_metrics = config.get("model_metrics") or {}
    for kind, name, unit, dimensions in HANDLER_METRICS:
        declared = {"name": name, "unit": unit, "dimensions": [*dimensions, *COMMON_DIMENSIONS]}
        model_metrics[kind] = [*(model_metrics.get(kind) or []), declared]
    return {**config, "model_metrics": model_metrics}
