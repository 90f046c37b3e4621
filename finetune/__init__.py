"""finetune stage: instruction pairs, QLoRA training, writing adapters.

Public surface (what compare and the demo use):

- ``finetune.pairs.make_pairs(store_dir, out, PairsConfig(...), questions=None)`` -> meta dict
- ``finetune.importers.import_file(path, fmt, out, ...)`` (alpaca | dolly | guanaco | jsonl)
- ``finetune.config.train_config(preset_or_yaml, **overrides)`` -> ``TrainConfig``
- ``finetune.train.train(config, pairs, out, resume=False)`` -> manifest dict
- ``finetune.adapter``: ``build_manifest``, ``write_manifest``, ``adapter_info``,
  ``merge_adapter``

Reading an adapter is ``models``' (so rag and compare need no finetune): ``models.formats``
(``get_format(name)`` -> ``Format``: llama2 | mistral | alpaca | chat, the same at training and
inference), ``models.adapters`` (``read_manifest``, ``adapter_format``, ``adapter_base``,
``load_adapter``, ``training_load_options``, ``load_adapter_generator``: a ``Generator`` that
prompts in the adapter's trained format and adds its stop strings).
"""
