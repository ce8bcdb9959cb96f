"""RunView: the one read model. Each fact several views show is asserted here, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.vocabulary import MechanismState, TrialStatus


@pytest.fixture
def j(tmp_path: Path):
    journal = Journal.open(tmp_path / "run")
    journal.init_run("run-1", {"task": "tinygpt", "iterations": 4}, {"mechanism": {"fuel": 1}})
    yield journal
    journal.close()


def trial(j: Journal, iteration: int, status: str = "ok", val: float | None = None, *, kind: str = "proposal",
          kept: bool = False, record: bool = True) -> int:
    tid = j.start_trial(iteration=iteration, kind=kind, changes={"LR": iteration}, hypothesis=f"h{iteration}")
    j.finish_trial(tid, status=status, val_bpb=val, exit_code=0)
    if kind == "proposal" and record:
        j.record_iteration({"iteration": iteration, "trial_id": tid, "changes": {"LR": iteration},
                            "config": {"LR": iteration}, "hypothesis": f"h{iteration}", "source": "proposer",
                            "status": status, "val_bpb": val, "kept": kept})
    return tid


def test_best_is_the_lowest_baseline_or_kept_trial_never_a_discarded_one(j: Journal):
    trial(j, 0, val=2.0, kind="baseline")
    trial(j, 1, val=1.0, kept=False)          # better, but discarded: never the best
    trial(j, 2, val=1.8, kept=True)
    trial(j, 3, "crash")
    trial(j, 4, val=1.9, kept=True)           # kept within noise: the best stays 1.8
    view = RunView.read(j)
    assert view.baseline.val_bpb == 2.0 and view.baseline_val_bpb == 2.0
    assert view.best.val_bpb == 1.8 and view.best.iteration == 2 and view.best_val_bpb == 1.8
    assert [t.seq for t in view.incumbents] == [0, 2, 4]
    assert view.best_by_seq() == [(0, 2.0), (2, 1.8), (4, 1.8)]
    assert view.best_by_iteration(2.0) == [2.0, 2.0, 1.8, 1.8, 1.8]
    status = view.status()
    assert status["best_val_bpb"] == 1.8 and status["baseline_val_bpb"] == 2.0
    assert status["trials"]["ok"] == 4 and status["trials"]["crash"] == 1 and status["trials"]["running"] == 0


def test_a_shared_baseline_counts_only_where_the_run_has_none(tmp_path: Path):
    with Journal.open(tmp_path / "group") as j:
        j.init_run("g", {"baseline_val_bpb": 2.5}, {})
        assert RunView.read(j).best_val_bpb == 2.5 and RunView.read(j).baseline_val_bpb == 2.5
        trial(j, 1, val=2.6, kept=True)       # kept but worse than the shared baseline
        view = RunView.read(j)
        assert view.best.val_bpb == 2.6 and view.best_val_bpb == 2.5
        assert view.best_by_iteration(2.5) == [2.5, 2.5]
    with Journal.open(tmp_path / "own") as j:
        j.init_run("o", {"baseline_val_bpb": 1.0}, {})
        trial(j, 0, val=2.0, kind="baseline")
        assert RunView.read(j).best_val_bpb == 2.0   # its own baseline wins over the shared one


def test_one_row_per_seq_the_finished_attempt_wins_and_reruns_are_listed(j: Journal):
    trial(j, 0, val=2.0, kind="baseline")
    lost = j.start_trial(iteration=1, kind="proposal", changes={"LR": 1})
    j.finish_trial(lost, status="infra", reason="engine restarted")
    seq = j.trial(lost)["seq"]
    assert [t.seq for t in RunView.read(j).to_rerun] == [seq]
    again = j.start_trial(iteration=1, kind="proposal", changes={"LR": 1}, seq=seq)
    j.finish_trial(again, status="ok", val_bpb=2.1)
    view = RunView.read(j)
    assert [t.trial_id for t in view.trials] == [1, again] and view.to_rerun == []
    assert [t.attempt for t in view.finished] == [1, 2]
    assert view.trial_counts()["infra"] == 1 and view.trial_counts()["ok"] == 2
    assert view.trials[1].status is TrialStatus.OK


def test_a_mechanism_state_is_quarantined_active_or_retired_and_retirement_has_its_iteration(j: Journal):
    q = j.add_mechanism(name="bad", origin="generated", activated_at_iteration=1)
    a = j.add_mechanism(name="good", origin="library", activated_at_iteration=1)
    r = j.add_mechanism(name="idle", origin="library", activated_at_iteration=1)
    j.quarantine_mechanism(q, "suggest raised", iteration=3)
    j.set_mechanism_active(r, False)
    j.record_decision(level="2", kind="research_session", payload={"action": "retire", "retired": r}, iteration=6)
    j.record_mechanism_call(mech_id=a, hook="suggest", input=[{}], output=[], outcome="ok")
    j.record_mechanism_call(mech_id=a, hook="suggest", input=[{}], output=[], outcome="ok")
    view = RunView.read(j)
    states = {m.name: m.state for m in view.mechanisms}
    assert states == {"bad": MechanismState.QUARANTINED, "good": MechanismState.ACTIVE,
                      "idle": MechanismState.RETIRED}
    assert view.mechanism(r).retired_after == 6 and view.mechanism(a).retired_after is None
    assert view.mechanism(a).calls == {"suggest": 2}
    shown = {m["name"]: (m["state"], m["active"], m["quarantined"]) for m in view.status()["mechanisms"]}
    assert shown == {"bad": ("quarantined", False, True), "good": ("active", True, False),
                     "idle": ("retired", False, False)}


def test_llm_use_per_level_and_in_total(j: Journal):
    j.record_llm_call(level="1", purpose="propose", model="m", outcome="ok", tokens_in=100, tokens_out=10, usd=0.5)
    j.record_llm_call(level="2", purpose="research:explore", model="m", outcome="error", tokens_in=7)
    j.record_llm_call(level="1", purpose="propose", model="m", outcome="ok", tokens_in=50, tokens_out=5, usd=0.25)
    view = RunView.read(j)
    assert view.llm_totals == {"calls": 3, "tokens": 172, "usd": 0.75}
    one, two = view.llm_levels
    assert (one.level, one.calls, one.failed, one.tokens, one.usd) == ("1", 2, 0, 165, 0.75)
    assert (two.level, two.calls, two.failed, two.purposes) == ("2", 1, 1, "research:explore")


def test_an_iteration_verdict_and_its_record_are_written_together(j: Journal):
    tid = j.start_trial(iteration=1, kind="proposal", changes={})
    j.finish_trial(tid, status="crash")
    with pytest.raises(Exception, match="cannot be kept"):   # a crash cannot be kept ...
        j.record_iteration({"iteration": 1, "trial_id": tid, "kept": True})
    assert RunView.read(j).iterations == ()                    # ... and its record was not written either


def test_history_entries_carry_exactly_the_history_keys(j: Journal):
    trial(j, 0, val=2.0, kind="baseline")
    trial(j, 1, val=1.5, kept=True)
    (rec,) = RunView.read(j).iterations
    assert rec.history_entry() == {"iteration": 1, "changes": {"LR": 1}, "val_bpb": 1.5, "status": "ok",
                                   "kept": True, "hypothesis": "h1", "source": "proposer"}
    assert RunView.read(j).record_of(rec.trial_id) == rec


def test_best_curve_counts_only_kept_trials_and_never_resets(tmp_path: Path):
    """The ablation's best-so-far curve of a group run, which has no baseline trial of its own."""
    with Journal.open(tmp_path / "group") as j:
        j.init_run("g", {"baseline_val_bpb": 2.0}, {})
        trial(j, 1, val=1.8, kept=True)
        trial(j, 2, val=1.0, kept=False)      # better but discarded: not the best
        trial(j, 3, val=1.9, kept=True)       # kept within noise: best stays 1.8
        trial(j, 4, "crash")
        assert RunView.read(j).best_by_iteration(2.0) == [2.0, 1.8, 1.8, 1.8, 1.8]


def _slotted(j: Journal, slot: int, gpus: int, wall: float | None) -> int:
    tid = j.start_trial(iteration=1, kind="proposal", changes={"LR": slot}, hypothesis="h")
    j.event("trial_slot", {"trial_id": tid, "seq": j.trial(tid)["seq"], "slot": slot, "cpuset": str(slot),
                           "cpus": 1.0, "gpus": list(range(gpus)) if gpus else None, "gpu_count": gpus})
    if wall is not None:
        j.finish_trial(tid, status="ok", val_bpb=1.0, wall_seconds=wall, exit_code=0)
    return tid


def test_gpu_hours_count_each_trials_gpus_times_its_wall_time(j: Journal):
    _slotted(j, 0, 2, 1800.0)        # 2 GPUs x 30 min = 1 GPU-hour
    _slotted(j, 1, 1, 3600.0)        # + 1
    _slotted(j, 2, 0, 3600.0)        # a CPU slot: none
    assert RunView.read(j).gpu_hours == pytest.approx(2.0)


def test_per_slot_state_is_derived_from_the_journal(j: Journal):
    j.set_state("running")
    done = _slotted(j, 0, 0, 5.0)
    live = _slotted(j, 1, 0, None)
    slots = RunView.read(j).slots()
    assert [(s["slot"], s["state"], s["trials"]) for s in slots] == [(0, "idle", 1), (1, "running", 1)]
    assert slots[1]["trial"]["trial_id"] == live and slots[0]["attempts"][0]["trial_id"] == done
    status = RunView.read(j).status()
    assert [s["state"] for s in status["slots"]] == ["idle", "running"] and "attempts" not in status["slots"][0]
    j.set_state("stopped")            # a dead run's last attempt is no running slot
    assert [s["state"] for s in RunView.read(j).slots()] == ["idle", "idle"]


def test_the_level2_decision_in_flight_is_an_intent_without_its_outcome(j):
    from bilevel.runtime.vocabulary import RESEARCH_INTENT

    assert RunView.read(j).research_in_flight(0) is None
    j.event(RESEARCH_INTENT, {"iteration": 0, "cycle": 0, "name": "a", "source_ref": "0" * 64})
    j.event(RESEARCH_INTENT, {"iteration": 3, "cycle": 1, "name": "b", "source_ref": "1" * 64})
    view = RunView.read(j)
    assert view.research_in_flight(0)["name"] == "a" and view.research_in_flight(3)["name"] == "b"
    assert view.research_in_flight(1) is None
    j.record_decision(level="2", kind="research_session", payload={"name": "a"}, iteration=0)
    view = RunView.read(j)
    assert view.research_in_flight(0) is None and view.research_in_flight(3)["name"] == "b"


def test_artifact_uses_name_where_each_ref_was_used_and_damage_is_found(j):
    script = j.artifacts.put("print('train')")
    log = j.artifacts.put("step 1")
    tid = j.start_trial(iteration=0, kind="baseline", changes={}, hypothesis=None, script_sha=script)
    j.finish_trial(tid, status="ok", val_bpb=2.0, exit_code=0, log_ref=log)
    mech = j.add_mechanism(name="tabu", origin="library", source_ref=j.artifacts.put("class Mechanism: pass"),
                           activated_at_iteration=1)
    big = {"blob": "x" * 300_000}   # over INLINE_MAX: stored as an artifact
    j.record_mechanism_call(mech_id=mech, hook="observe", input=[big], outcome="ok", iteration=1)
    view = RunView.read(j)
    wheres = [w for _ref, w in view.artifact_uses()]
    assert wheres[:3] == ["trial 0's script", "trial 0's log", f"mechanism {mech} (tabu)'s source"]
    assert f"mechanism {mech}'s call 0 (observe) input" in wheres
    assert view.damaged_artifacts(j.artifacts) == []
    j.artifacts.path(log).write_text("step 1 forged")
    assert [(w, p.split(" ")[0]) for _r, w, p in view.damaged_artifacts(j.artifacts)] == [("trial 0's log", "tampered")]


def _iteration(j: Journal, it: int, source: str, llm: str | None) -> None:
    j.record_iteration({"iteration": it, "trial_id": None, "changes": {}, "config": {}, "hypothesis": "",
                        "source": source, "status": "ok", "val_bpb": 1.0, "kept": False, "llm": llm})


def test_llm_decisions_count_llm_fallback_and_mechanism_per_level(tmp_path: Path):
    with Journal.open(tmp_path / "run") as j:
        j.init_run("r", {"llm": "some-model"}, {})
        _iteration(j, 1, "proposer", "usable")       # the LLM's proposal ran
        _iteration(j, 2, "fallback", "refused")      # refused by the checks: the offline step ran
        _iteration(j, 3, "tabu", "failed")           # no usable reply; a mechanism's candidate ran
        _iteration(j, 4, "proposer", None)           # the run went offline: the offline proposer
        j.record_decision(level="1.5", kind="search_config:llm", payload={"active": [], "llm": "usable"},
                          iteration=4)
        j.record_decision(level="1.5", kind="search_config:offline", payload={"active": [], "llm": "failed"},
                          iteration=4)
        j.record_decision(level="2", kind="research_session",
                          payload={"origin": "generated", "accepted": False, "source_ref": "x"},
                          iteration=4)
        view = RunView.read(j)
        d = view.llm_decisions()
        assert d["1"] == {"asked": 3, "usable": 1, "llm": 1, "fallback": 2, "offline": 0, "mechanism": 1}
        assert d["1.5"] == {"asked": 2, "usable": 1, "llm": 1, "fallback": 1, "offline": 0, "mechanism": 0}
        assert d["2"]["asked"] == 1 and d["2"]["usable"] == 0 and d["2"]["llm"] == 0
        # The last three answers (1.5 failed, 2 refused; iteration 4 asked nothing) were unusable.
        assert view.unusable_streak == 2
        status = view.status()["llm"]
        assert status["calls"] == 0 and status["decisions"] == d and status["unusable_streak"] == 2
        _iteration(j, 5, "proposer", "usable")
        assert RunView.read(j).unusable_streak == 0


def test_an_offline_run_counts_offline_never_fallback(j: Journal):
    _iteration(j, 1, "proposer", None)
    _iteration(j, 2, "fallback", None)
    d = RunView.read(j).llm_decisions()["1"]
    assert d["offline"] == 2 and d["fallback"] == 0 and d["llm"] == 0 and d["asked"] == 0
