"""gRPC interface of LLM drafting: ``hygie_llm.proto`` (Generate, GenerateStream, Health)."""
