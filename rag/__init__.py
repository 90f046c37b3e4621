"""rag stage: retrieval over a store, prompts with cited sources, answers through ``models``.

Public surface (imported from the modules, nothing is re-exported here so a plain
``import rag`` stays light): ``rag.retrievers.make_retriever``, ``rag.prompts.render_prompt`` /
``REFUSALS`` / ``template_version``, ``rag.budget.context_budget`` / ``fit_passages``,
``rag.pipeline.RagConfig`` / ``RagPipeline`` / ``RagAnswer`` (THE RAG system: retriever + token
budget + prompt set + generator, with an adapter's prompt format; ``rag ask``, LangChain's chain
and compare's four systems all answer through it), ``rag.evaluation``,
``rag.langchain.StoreRetriever`` / ``make_chain``; the ``rag`` CLI is ``rag.cli``.
"""
