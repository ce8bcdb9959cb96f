"""A bilevel run: its config and resume rules, budgets, the trial runner, the run's mechanisms,
the outer levels and the schedule that ties them together. The one writer of the journal."""
