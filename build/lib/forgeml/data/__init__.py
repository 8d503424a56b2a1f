"""Data: sources (bundled, CSV/Parquet, synthetic), checks, fitted preprocessing, the DataModule."""
