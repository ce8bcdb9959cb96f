"""Every word the runtime uses for a state or an outcome, defined once.

They are `StrEnum`s: a member is equal to its string, so the journal's columns, the `--json`
outputs and old runs' rows read and compare as before, while code names the member.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"


class TrialKind(StrEnum):
    BASELINE = "baseline"
    PROPOSAL = "proposal"
    REPEAT = "repeat"


class TrialStatus(StrEnum):
    """A trial attempt's status. The contract's five outcomes, plus the three an attempt can be
    in that are not the script's doing: still running, interrupted by a dead orchestrator, lost to
    the engine."""

    RUNNING = "running"
    OK = "ok"
    CRASH = "crash"
    TIMEOUT = "timeout"
    OOM = "oom"
    INVALID = "invalid"
    INTERRUPTED = "interrupted"
    INFRA = "infra"


# The trial's own outcome (DESIGN's `ok | crash | timeout | oom | invalid`), in that order.
FINISHED = (TrialStatus.OK, TrialStatus.CRASH, TrialStatus.TIMEOUT, TrialStatus.OOM, TrialStatus.INVALID)
FAILED = FINISHED[1:]                                    # finished, but not ok
RERUN = (TrialStatus.INTERRUPTED, TrialStatus.INFRA)     # not the trial's fault: run it again


class Hook(StrEnum):
    """The mechanism contract's hooks, in the order a smoke test calls them."""

    OBSERVE = "observe"
    CONTEXT = "context"
    CONSTRAINTS = "constraints"
    SUGGEST = "suggest"
    REVIEW = "review"
    ACCEPT = "accept"


class HookOutcome(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    INVALID = "invalid"
    FUEL = "fuel"
    MEMORY = "memory"


class MechanismFault(StrEnum):
    """Why the loop itself quarantined a mechanism whose calls all succeeded."""

    NO_CANDIDATE = "no_candidate"   # its constraints or review left nothing admissible to run


class MechanismOrigin(StrEnum):
    LIBRARY = "library"
    GENERATED = "generated"


class MechanismState(StrEnum):
    """Derived from a mechanism's journal row (`journal.records.Mechanism.state`), nowhere else."""

    ACTIVE = "active"
    RETIRED = "retired"          # switched off by Level 2; not restored on resume
    QUARANTINED = "quarantined"  # failed a call; the run went on without it


class SlotState(StrEnum):
    """A parallel trial slot's state, derived in `RunView.slots`."""

    RUNNING = "running"     # a trial of the live run is in its container
    IDLE = "idle"           # free: waiting for a proposal, a Level 1.5/2 session, or the run's end


class Level(StrEnum):
    INNER = "1"
    STRATEGY = "1.5"
    RESEARCH = "2"


LEVELS = tuple(Level)


# The journal event a Level 2 session writes before it activates anything (its outcome is the
# `research_session` decision written after); `RunView.research_in_flight` pairs them.
RESEARCH_INTENT = "research_intent"
