"""Local LLM registry and loaders (LLM issue)."""
