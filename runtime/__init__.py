"""Trusted core: policy, engine, images, trials, mechanisms, journal, CLI."""
