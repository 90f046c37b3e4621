"""compare: base vs RAG vs fine-tuned vs both on the same questions, with paired statistics.

``compare.systems`` (the four systems, each rag's one RAG system ``rag.pipeline.RagPipeline``
behind ``compare.protocol.System``, and their factory), ``compare.runner`` (columns, resume,
run dirs), ``compare.metrics`` / ``compare.stats`` / ``compare.aggregate`` (scores and tests),
``compare.report`` (Markdown and HTML) and ``compare.cli`` (the ``compare`` command). The whole
pipeline on the embedded default is the ``demo`` package (``python -m demo``).
"""
