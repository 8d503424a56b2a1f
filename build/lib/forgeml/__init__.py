"""forgeml: a declarative, config-driven ML framework, from a YAML file to a monitored endpoint."""

__version__ = "0.1.0"
