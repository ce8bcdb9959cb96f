"""The run's record: the schema and its migrations, the store that writes it, typed records, the
content-addressed artifacts, and `RunView`, the one read model every reader derives from."""
