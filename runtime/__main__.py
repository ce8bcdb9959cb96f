"""`python -m bilevel.runtime ...` is the `bilevel` command."""

from bilevel.runtime.outputs.cli import entry

entry()
