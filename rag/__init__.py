"""rag stage."""
