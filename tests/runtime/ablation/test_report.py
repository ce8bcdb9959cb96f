"""The ablation's report on synthetic results: p-values beside effects, flags, the figure."""

from __future__ import annotations

from bilevel.runtime.ablation import report as ablate_report
from bilevel.runtime.ablation.protocol import GROUPS

from ablation_results import mech, result


def test_report_puts_p_values_next_to_effects_and_shows_flags(tmp_path):
    manifest = {
        "protocol": {"task": "tinygpt", "llm": "offline", "llm_base_url": None, "seeds": [1, 2, 3],
                     "iterations": 3, "budget": 1.0, "noise_repeats": 3, "strategy_every": 1,
                     "research_every": 1, "policy": None},
        "groups": ["A", "B", "C"], "noise_floor": 0.01, "command": "bilevel ablate --seeds 1,2,3",
        "baselines": {str(s): {"run": f"runs/baseline-s{s}", "values": [2.0, 2.0], "mean": 2.0} for s in (1, 2, 3)},
    }
    results = [result(g, s, d, mechanisms=[mech({} if g == "C" and s == 2 else {"context": 1})]
                      if "2" in GROUPS[g] else None)
               for g, ds in (("A", (-0.01, -0.011, -0.012)), ("B", (-0.02, -0.021, -0.019)),
                             ("C", (-0.05, -0.051, -0.049)))
               for s, d in zip((1, 2, 3), ds, strict=True)]
    md = ablate_report.markdown(tmp_path, manifest, results)
    row = next(line for line in md.splitlines() if line.startswith("| C vs A |"))
    assert "-0.0390" in row and "0.100" in row and "exact, 20 relabellings" in row   # 2 of C(6,3) = 20
    assert "C-s2: mechanism tabu" in md and "never called" in md
    assert "OFFLINE" in md and "bilevel ablate --seeds 1,2,3" in md and "σ = 0.010000" in md
    png = ablate_report.plot(manifest, results, tmp_path / "ablation.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_hostile_mechanism_names_reach_ablation_md_inert(tmp_path):
    from hostile_text import HOSTILE, assert_markdown_safe

    manifest = {
        "protocol": {"task": "tinygpt", "llm": "offline", "llm_base_url": None, "seeds": [1],
                     "iterations": 3, "budget": 1.0, "noise_repeats": 3, "strategy_every": 1,
                     "research_every": 1, "policy": None},
        "groups": ["A", "C"], "noise_floor": 0.01, "command": "bilevel ablate --seeds 1",
        "baselines": {"1": {"run": "runs/baseline-s1", "values": [2.0, 2.0], "mean": 2.0}},
    }
    results = [result("A", 1, -0.01), result("C", 1, -0.02, mechanisms=[mech({}, name=HOSTILE)])]
    md = ablate_report.markdown(tmp_path, manifest, results)
    assert_markdown_safe(md)
    assert "never called" in md                                    # the flag is there, its name inert
    assert_markdown_safe(md, "| C-s1 | 1 |", 8)
