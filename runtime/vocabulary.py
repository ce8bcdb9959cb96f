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


class TrialMode(StrEnum):
    """What a trial's proposal may change: the constants of a trusted template, or the code."""

    PARAMS = "params"   # typed edits of the task's constants; the template's harness computes val_bpb
    CODE = "code"       # the training code itself; a separate trusted evaluator computes val_bpb


class Gate(StrEnum):
    """The checks a code-mode trial's number must pass (`runtime/evaluation/gates.py`); a trial
    failing one ends `invalid`, and its reason and the journal's `trials.gate` name the gate."""

    CHECKPOINT = "checkpoint"   # a weights-only checkpoint, within the size and parameter caps
    INTERFACE = "interface"     # build_model(config) builds a model the checkpoint fits; forward runs
    SHAPE = "shape"             # logits of shape (B, T, vocabulary)
    FINITE = "finite"           # every logit finite
    CAUSALITY = "causality"     # logits at <= t do not depend on tokens after t
    ORDER = "order"             # two passes in different secret orders agree: no state across batches
    DEADLINE = "deadline"       # the evaluation's own deadline
    MEMORY = "memory"           # the model container's own memory limit
    CHANNEL = "channel"         # the replies are well-formed frames, each the size it must be


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
class LLMAnswer(StrEnum):
    """What became of one decision the LLM was asked for (a proposal, a strategy, a session)."""

    USABLE = "usable"      # parsed, and passed the checks that apply to it
    REFUSED = "refused"    # parsed, but refused (outside the search space, a rejected module)
    FAILED = "failed"      # no usable reply at all (malformed after the re-ask, or the call failed)


class DecisionSource(StrEnum):
    """Who took a decision, as `RunView.llm_decisions` counts them per level."""

    LLM = "llm"
    FALLBACK = "fallback"     # the offline rule, in a run that has an LLM
    OFFLINE = "offline"       # the offline rule, in an offline run
    MECHANISM = "mechanism"   # Level 1: a mechanism's candidate was run


class LLMCallOutcome(StrEnum):
    """The journal's `llm_calls.outcome`."""

    OK = "ok"
    MALFORMED = "malformed"
    ERROR = "error"
    BUDGET = "budget"
    TIMEOUT = "timeout"       # the client gave up (its deadline) and closed the connection
    UNSUPPORTED = "unsupported"  # the endpoint refused a request option (e.g. a JSON schema)


class ResponseFormat(StrEnum):
    """How a JSON answer was asked for, strongest first; a run steps down when an endpoint
    refuses one (HTTP 400/422/500 on the option) and journals which one each call used."""

    JSON_SCHEMA = "json_schema"              # {"type": "json_schema", "json_schema": {...}} (OpenAI)
    JSON_OBJECT_SCHEMA = "json_object+schema"  # {"type": "json_object", "schema": {...}} (llama.cpp)
    JSON_OBJECT = "json_object"              # JSON mode, no schema
    PLAIN = "plain"                          # no response_format: the prompt asks, repair and re-ask


RESPONSE_FORMATS = tuple(ResponseFormat)
