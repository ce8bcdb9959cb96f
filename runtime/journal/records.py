"""The journal's rows as typed, frozen records: what crosses from the journal to every reader.

`RunView` builds these from the store's decoded rows once per read; readers never see the rows.
Each record keeps the column names of its table, so a record and its row say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bilevel.inner.loop import HISTORY_KEYS
from bilevel.runtime.vocabulary import (
    FAILED,
    FINISHED,
    RERUN,
    MechanismOrigin,
    MechanismState,
    RunState,
    TrialKind,
    TrialMode,
    TrialStatus,
)


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    created_at: str
    config: dict
    policy: dict
    state: RunState
    state_reason: str | None
    updated_at: str

    @classmethod
    def from_row(cls, row: dict) -> RunInfo:
        return cls(run_id=row["run_id"], created_at=row["created_at"], config=row["config"],
                   policy=row["policy"], state=RunState(row["state"]),
                   state_reason=row["state_reason"], updated_at=row["updated_at"])


@dataclass(frozen=True)
class Trial:
    """One attempt of a logical trial (`seq`); a rerun is a later attempt of the same seq."""

    trial_id: int
    seq: int
    attempt: int
    iteration: int
    kind: TrialKind
    changes: dict
    hypothesis: str | None
    script_sha: str | None
    status: TrialStatus
    reason: str | None
    val_bpb: float | None
    training_seconds: float | None
    wall_seconds: float | None
    peak_mem_mb: float | None
    exit_code: int | None
    log_ref: str | None
    kept: bool | None
    started_at: str
    ended_at: str | None
    # Code mode (schema step 3; None on older journals and on params-mode trials).
    mode: str | None = None
    diff_ref: str | None = None
    checkpoint_sha: str | None = None
    gate: str | None = None

    @property
    def is_code(self) -> bool:
        return self.mode == TrialMode.CODE

    @classmethod
    def from_row(cls, row: dict) -> Trial:
        return cls(**{**row, "kind": TrialKind(row["kind"]), "status": TrialStatus(row["status"])})

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def failed(self) -> bool:
        return self.status in FAILED

    @property
    def to_rerun(self) -> bool:
        return self.status in RERUN

    @property
    def is_baseline(self) -> bool:
        return self.kind == TrialKind.BASELINE

    @property
    def is_incumbent(self) -> bool:
        """The one definition of a trial that counts for "best": it ended ok and is the baseline
        or was kept. A lucky discarded trial never does."""
        return self.status == TrialStatus.OK and (self.is_baseline or bool(self.kept))


@dataclass(frozen=True)
class Iteration:
    """One completed Level 1 iteration, as the loop recorded it (the journal event `iteration`)."""

    iteration: int
    trial_id: int | None
    changes: dict
    config: dict
    hypothesis: str
    source: str | None
    status: str
    val_bpb: float | None
    best_before: float | None
    kept: bool
    decision: str | None
    rejected: list = field(default_factory=list)
    effects: dict = field(default_factory=dict)
    repeat_trial_id: int | None = None
    payload: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_payload(cls, p: dict) -> Iteration:
        return cls(iteration=p["iteration"], trial_id=p.get("trial_id"), changes=p.get("changes") or {},
                   config=p.get("config") or {}, hypothesis=p.get("hypothesis") or "", source=p.get("source"),
                   status=p.get("status", ""), val_bpb=p.get("val_bpb"), best_before=p.get("best_before"),
                   kept=bool(p.get("kept")), decision=p.get("decision"), rejected=p.get("rejected") or [],
                   effects=p.get("effects") or {}, repeat_trial_id=p.get("repeat_trial_id"), payload=p)

    def history_entry(self) -> dict:
        """What the proposer's prompt, Level 1.5 and every mechanism's `view` see of it."""
        return {k: self.payload.get(k) for k in HISTORY_KEYS}


@dataclass(frozen=True)
class Mechanism:
    mech_id: int
    name: str
    origin: MechanismOrigin
    source_ref: str | None
    activated_at_iteration: int | None
    active: bool
    quarantined: bool
    quarantine_reason: str | None
    quarantined_at_iteration: int | None
    created_at: str
    calls: dict[str, int] = field(default_factory=dict)   # hook -> journaled calls
    retired_after: int | None = None                       # the iteration after which Level 2 retired it

    @classmethod
    def from_row(cls, row: dict, calls: dict[str, int], retired_after: int | None) -> Mechanism:
        return cls(**{**row, "origin": MechanismOrigin(row["origin"])}, calls=dict(calls),
                   retired_after=retired_after)

    @property
    def state(self) -> MechanismState:
        """The one definition of a mechanism's state: a quarantine wins; a row that is neither
        active nor quarantined was switched off by Level 2."""
        if self.quarantined:
            return MechanismState.QUARANTINED
        return MechanismState.ACTIVE if self.active else MechanismState.RETIRED


@dataclass(frozen=True)
class Decision:
    id: int
    level: str
    iteration: int | None
    kind: str
    payload: Any
    at: str

    @classmethod
    def from_row(cls, row: dict) -> Decision:
        return cls(**row)


@dataclass(frozen=True)
class LLMUse:
    """LLM calls, tokens and USD of one level (or of the whole run, `level=None`)."""

    level: str | None
    calls: int
    failed: int
    tokens_in: int
    tokens_out: int
    usd: float
    purposes: str = ""

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out
