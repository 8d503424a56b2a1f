"""Monitoring: the training reference profile, drift tests, the inference log and reports."""
