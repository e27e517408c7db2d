"""A watched manifest directory (`meshgate up --watch DIR`): files in, store writes out."""
