"""What a person sees: the command line, the live display, status, the report and its figure,
results.tsv, and the replay and mechanism-check commands. Readers of `RunView` only."""
