"""The run's mechanisms: sandboxed, journaled, restorable.

Every hook call goes to the journal with its inputs (so `bilevel replay` can re-feed them),
a quarantine is journaled with its reason, and on resume each active mechanism is restored
in a fresh sandbox by replaying its journaled calls in order. A restored mechanism whose
replay diverges is quarantined rather than trusted.
"""

from __future__ import annotations

from typing import Any

from bilevel.runtime.journal.artifacts import ArtifactError
from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.mechanisms.host import CallRecord, MechanismSet, SandboxedMechanism, container_factory
from bilevel.runtime.mechanisms.replay import replay_calls
from bilevel.runtime.mechanisms.validation import validate
from bilevel.runtime.policy import Policy
from bilevel.runtime.vocabulary import MechanismFault, MechanismState


def mechanism_seed(run_seed: int, mech_id: int) -> int:
    """Each mechanism's seeded `random`, derived so that a replay can recompute it."""
    return run_seed * 1000 + mech_id


class RunMechanisms:
    """What the inner loop calls (`call_all`, `review_chain`), plus activation and restore."""

    def __init__(self, client, policy: Policy, journal: Journal, run_id: str, seed: int) -> None:
        self.client, self.policy, self.journal = client, policy, journal
        self.run_id, self.seed = run_id, seed
        self.set = MechanismSet()
        self.iteration: int | None = None
        self._journaling = True

    # ---- journaling callbacks -----------------------------------------------------------

    def _on_call(self, rec: CallRecord) -> None:
        if self._journaling:
            self.journal.record_mechanism_call(
                mech_id=rec.mech_id, hook=rec.hook, input=rec.input, output=rec.output,
                outcome=rec.outcome, error=rec.error, latency_ms=rec.latency_ms, iteration=self.iteration)

    def _on_quarantine(self, info: dict) -> None:
        seq = "" if info.get("seq") is None else f" (call {info['seq']})"
        reason = f"{info['outcome']} in {info['hook']}{seq}: {info['error']}"[:1000]
        self.journal.quarantine_mechanism(info["mech_id"], reason, iteration=self.iteration)

    def _sandbox(self, mech_id: int, name: str, source: str, policy: Policy | None = None) -> SandboxedMechanism:
        return SandboxedMechanism(
            mech_id, source, policy=policy or self.policy, seed=mechanism_seed(self.seed, mech_id), name=name,
            transport_factory=container_factory(self.client, labels={"bilevel.run": self.run_id}),
            on_call=self._on_call, on_quarantine=self._on_quarantine, run_id=self.run_id,
        )

    # ---- lifecycle ----------------------------------------------------------------------

    def validate(self, source: str) -> tuple[bool, str]:
        """The full validation pipeline (size, AST, compile, load, smoke test) in a sandbox."""
        verdict = validate(source, self.policy)
        return verdict.accepted, f"{verdict.stage}: {verdict.reason}"

    def activate(self, name: str | None, origin: str, source: str, iteration: int) -> tuple[bool, str, int]:
        """Journal and start a validated mechanism; it is called from the next iteration on."""
        ref = self.journal.artifacts.put(source)
        mech_id = self.journal.add_mechanism(name=name or "generated", origin=origin, source_ref=ref,
                                             activated_at_iteration=iteration + 1)
        mech = self._sandbox(mech_id, name or "generated", source)
        loaded = mech.start()
        if not loaded.ok:
            return False, f"{loaded.stage}: {loaded.error}", mech_id
        mech.name = name or "generated"  # one name everywhere: journal, effects, status, report
        self.set.add(mech)
        return True, "active", mech_id

    def restore(self) -> list[str]:
        """Bring back the active mechanisms of a resumed run by replaying their calls."""
        notes = []
        for row in RunView.read(self.journal).mechanisms:
            if row.state != MechanismState.ACTIVE:
                continue
            try:
                source = self.journal.artifacts.get_text(row.source_ref)
            except ArtifactError as exc:  # a damaged source is never run: the mechanism stays off
                self.journal.quarantine_mechanism(row.mech_id, f"source artifact failed verification: {exc}")
                notes.append(f"{row.name}: quarantined on resume (damaged source)")
                continue
            mech = self._sandbox(row.mech_id, row.name, source)
            self._journaling = False
            try:
                same = mech.start().ok and replay_calls(mech, self.journal.mechanism_calls(row.mech_id)).same
            finally:
                self._journaling = True
            if same:
                mech.name = row.name
                self.set.add(mech)
                notes.append(f"{row.name}: restored")
            else:
                mech.close()
                if not mech.quarantined:
                    self.journal.quarantine_mechanism(row.mech_id, "replay on resume diverged")
                notes.append(f"{row.name}: quarantined on resume")
        return notes

    def retire(self, name: str) -> int | None:
        """Switch off an active mechanism (Level 2 decided it does not earn its place); its
        journal row stays, inactive, so it is not restored on resume. Returns its id."""
        for m in self.set.mechs:
            if m.name == name and m.active:
                m.close()
                self.journal.set_mechanism_active(m.mech_id, False)
                return m.mech_id
        return None

    def live_id(self, name: str) -> int | None:
        """The id of the running mechanism called `name`, if one is."""
        return next((m.mech_id for m in self.set.mechs if m.active and m.name == name), None)

    def is_live(self, mech_id: int) -> bool:
        return any(m.mech_id == mech_id and m.active for m in self.set.mechs)

    def close(self) -> None:
        self.set.close()

    # ---- what the loop and the outer levels see -------------------------------------------

    def call_all(self, hook: str, *args: Any) -> list[tuple[str, Any]]:
        return self.set.call_all(hook, *args)

    def review_chain(self, candidates: list[dict], view: dict):
        return self.set.review_chain(candidates, view)

    def quarantine(self, name: str, hook: str, reason: str) -> None:
        """The loop's verdict on a mechanism whose output left nothing to run (journaled)."""
        self.set.quarantine(name, hook, reason, outcome=MechanismFault.NO_CANDIDATE)

    def rows(self) -> list[dict]:
        """The running mechanisms as Level 2 weighs them, with their journaled calls per hook."""
        live = {m.mech_id for m in self.set.mechs if m.active}
        return [{"name": m.name, "origin": m.origin.value, "active": m.active,
                 "activated_at_iteration": m.activated_at_iteration, "calls": dict(m.calls)}
                for m in RunView.read(self.journal).mechanisms if m.mech_id in live]


def journal_replay_inputs(journal: Journal, mech_id: int) -> tuple[dict, list[dict]]:
    """The replay header and call records of a mechanism, as the journal holds them."""
    view = RunView.read(journal)
    row = view.mechanism(mech_id)
    if row is None:
        raise ValueError(f"the run has no mechanism {mech_id}")
    seed = mechanism_seed(int(view.config.get("seed", 0)), mech_id)
    header = {"mech_id": mech_id, "name": row.name, "seed": seed, "limits": view.run.policy["mechanism"],
              "source": journal.artifacts.get_text(row.source_ref)}
    return header, journal.mechanism_calls(mech_id)
