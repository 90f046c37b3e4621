"""compare: base vs RAG vs fine-tuned vs both on the same questions, with paired statistics.

``compare.systems`` (the four systems and their factory), ``compare.runner`` (columns, resume,
run dirs), ``compare.metrics`` / ``compare.stats`` / ``compare.aggregate`` (scores and tests),
``compare.report`` (Markdown and HTML), ``compare.cli`` (the ``compare`` command) and
``compare.demo`` (the whole pipeline on the embedded default).
"""
