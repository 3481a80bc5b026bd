"""Reading and writing volumes: formats, stores and metadata."""
