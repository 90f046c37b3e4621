"""models stage: naming, loading and running models; nothing here knows about stores or prompts.

``models.sources`` / ``models.bundled`` (one way to name a model), ``models.loading`` (model,
tokenizer, config and window, LoRA attachment, fingerprints; a model is resolved once and the
``ModelRef`` passed on), ``models.generation`` (the ``Generator`` protocol, ``Decoding``,
``Generation``), its backends ``models.gen_transformers`` and ``models.gen_openai`` chosen by
``models.backends.make_generator``, ``models.slot`` (one copy of the weights shared by the
generators with and without a LoRA adapter), ``models.formats`` (prompt formats an adapter is
trained in) and ``models.adapters`` (reading an adapter dir: manifest, format, base, identity,
loading), ``models.embedders`` (sentence embedders).
"""
