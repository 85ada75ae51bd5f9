"""Blob stores: a local folder (embedded default); S3-compatible stores join next."""
