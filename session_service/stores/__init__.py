"""The only places that speak SQL (the Postgres repositories, migrations) and
qdrant-client (vector store)."""
