"""Embeddings of kept samples, their FAISS index, search, and semantic dedup (SemDeDup)."""
