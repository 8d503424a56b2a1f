"""Serving: the TorchServe handler and archive, the local server and batch prediction."""
