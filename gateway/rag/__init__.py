"""Knowledge bases (RAG): document ingestion, embedding, storage, retrieval and injection of passages."""
