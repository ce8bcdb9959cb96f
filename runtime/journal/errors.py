"""What the journal raises; every message says why."""

from __future__ import annotations


class JournalError(RuntimeError):
    """A journal that cannot be opened or a write that breaks its rules; the message says why."""


class JournalVersionError(JournalError):
    """The journal's schema version is not one this code can use."""


class JournalLocked(JournalError):
    """Another process holds the journal open for writing."""
