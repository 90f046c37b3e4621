"""Bundled embedders (placeholder; written by the embedder helper)."""
