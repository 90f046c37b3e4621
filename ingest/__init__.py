"""ingest stage: a MediaWiki dump -> clean text -> chunks -> vectors -> a searchable store.

Public surface: ``ingest.build.build_store`` (and its reusable steps ``ingest.pages.read_blocks``,
``prepare_page``, ``ingest.embedding.embed_texts``, ``ingest.finish.finish_store``),
``ingest.config.IngestConfig``, ``ingest.store.Store`` / ``Chunk`` / ``describe_store``, and the
``ingest`` CLI (``ingest.cli``). torch and transformers load only when an embedder or a
tokenizer is needed.
"""
