"""The demo driver: the whole pipeline on the embedded default, ``python -m demo`` (``make demo``).

It sits above every stage (models, ingest, finetune, compare) and only calls their public
functions and CLIs; see ``demo.driver``.
"""
