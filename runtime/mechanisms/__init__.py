"""The mechanism host: one sandboxed mechanism per container, its wire protocol and output schema,
the validation pipeline, and replay-and-compare. Nothing here writes a journal."""
