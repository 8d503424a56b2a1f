"""One module per pipeline stage, each exposing `run(cfg) -> dict` of what it measured."""
