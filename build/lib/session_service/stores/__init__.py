"""The only places that speak SQL (repository, migrations) and qdrant-client (vector store)."""
