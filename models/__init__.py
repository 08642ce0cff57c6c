"""Local LLM registry, loaders (llama.cpp, transformers), the loaded-model cache and the
remote fallback (issue 7). See docs/llm.md."""
