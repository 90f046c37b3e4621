"""Query and passage prompts of embedder families, defined once.

``models.embedders`` falls back to them for an e5 folder without prompts in its
``config_sentence_transformers.json``; ``models.bundled_embedders`` writes them into the bundled
e5 model's folder. (A module of its own: ``embedders`` -> ``sources`` -> ``bundled_embedders``
already import each other in that order, so neither can hold it for the other.)
"""

from __future__ import annotations

E5_PROMPTS = {"query": "query: ", "passage": "passage: "}  # multilingual-e5 family
