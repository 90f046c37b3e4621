"""The shared core every room imports: errors, registries, config loading, paths, CLI support,
package versions, hashing, text utilities and the one question record.

It imports nothing from the rooms (``models``, ``ingest``, ``rag``, ``finetune``, ``compare``).
"""
