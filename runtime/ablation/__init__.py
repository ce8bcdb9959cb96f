"""`bilevel ablate`: runs the paper's groups as ordinary runs, then their statistics and report.
It orchestrates runs from above; nothing in the run or the sandbox imports it."""
