"""finetune stage: instruction pairs, prompt formats, QLoRA training, adapters.

Public surface (what compare and the demo use):

- ``finetune.pairs.make_pairs(store_dir, out, PairsConfig(...), questions=None)`` -> meta dict
- ``finetune.importers.import_file(path, fmt, out, ...)`` (alpaca | dolly | guanaco | jsonl)
- ``finetune.config.train_config(preset_or_yaml, **overrides)`` -> ``TrainConfig``
- ``finetune.train.train(config, pairs, out, resume=False)`` -> manifest dict
- ``finetune.adapter``: ``read_manifest``, ``adapter_format``, ``adapter_info``,
  ``load_adapter``, ``training_load_options``, ``merge_adapter``
- ``finetune.inference.load_adapter_generator(adapter)`` -> a ``Generator`` that prompts in the
  adapter's trained format (``Format.adapt``) and adds its stop strings
- ``finetune.formats.get_format(name)`` -> ``Format`` (llama2 | mistral | alpaca | chat)
"""
