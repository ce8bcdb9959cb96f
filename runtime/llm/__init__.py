"""The LLM client (any OpenAI-compatible endpoint) and the parsing and fencing of what it says."""
