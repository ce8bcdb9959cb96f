"""The `bilevel` command line: parse arguments, call the module that does the work, exit."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from bilevel.inner import edits, tasks
from bilevel.runtime.files import DISK_FULL_EXIT, disk_full
from bilevel.runtime.journal.store import Journal, JournalError
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.outputs.safe_text import for_terminal
from bilevel.runtime.policy import PolicyError, load
from bilevel.runtime.sandbox import doctor, engine, executor, images, preflight
from bilevel.runtime.sandbox.images import ImageError
from bilevel.runtime.sandbox.ray_backend import RayUnavailable

# The run loop, its LLM client, the report (matplotlib) and the mechanism tools are imported
# by the commands that use them, so that `bilevel trial` and `bilevel doctor` start quickly.


def cmd_images_build(args: argparse.Namespace) -> int:
    client = engine.connect(timeout=1800)
    t0 = time.monotonic()
    log = lambda m: print(f"images: {m}", flush=True)  # noqa: E731
    if args.checkout:
        from bilevel.runtime.sandbox import checkout_image

        if images.check(client, "base") is not None:
            raise ImageError(f"{images.repo('base')} is missing: run `bilevel images build` first")
        name = checkout_image.build(client, Path(args.checkout), torch=args.torch, log=log)
        print(f"images: {name} done in {time.monotonic() - t0:.1f} s (the stock images are untouched)")
        return 0
    images.build(client, base=args.base, log=log)
    print(f"images: done in {time.monotonic() - t0:.1f} s")
    return 0


def _resolve(args: argparse.Namespace, budget: float | None = None) -> tasks.Task:
    """The task the arguments name (`--space` and `--smoke` for a checkout)."""
    return tasks.resolve(args.task, args.repo, args.cache, space=getattr(args, "space", None),
                         smoke=getattr(args, "smoke", False), budget=budget)


def cmd_doctor(args: argparse.Namespace) -> int:
    task = _resolve(args) if args.repo else None
    text, code = doctor.report(doctor.run_checks(args.policy, task=task))
    print(text)
    if args.executor == "ray":
        ray_text, ray_code = doctor.ray_report(args.ray_address)
        print(ray_text)
        code = code or ray_code
    return code


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    changes = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise edits.EditError(f"--set {pair!r}: expected NAME=VALUE")
        changes[name.strip()] = value
    return changes


def trial_script(task: tasks.Task, sets: dict[str, str], budget: float | None, mode: str = "params") -> str:
    """The task's script (its code-mode script in code mode) with validated constants and the
    training budget written in."""
    values = edits.validate(sets, task.space)
    edits.check_rules(task.space, {**task.defaults(), **values})  # refused before a trial, not asserted in one
    return edits.apply(task.code_source() if mode == "code" else task.source(),
                       {**values, **task.runtime_values(budget=budget)})


def cmd_trial(args: argparse.Namespace) -> int:
    policy = load(args.policy)
    task = _resolve(args, args.budget if args.smoke else None)
    if args.budget is not None:
        task.check_budget(args.budget)
    if args.mode == "code":
        task.check_code_mode()
    if args.script:
        if args.set:
            raise edits.EditError("--set applies to the task's script; it cannot be combined with --script")
        script = Path(args.script).read_text()  # untrusted, run as it is
    else:
        script = trial_script(task, _parse_sets(args.set), args.budget, args.mode)
    budget = args.budget or task.defaults_budget()
    client = engine.connect()
    engine.sweep_orphans(client)
    preflight.require(client, policy, task)
    trial_id = executor.new_trial_id()
    work = Path(args.out or Path("runs") / "trials" / trial_id)
    gpu = policy.gpu_ids() is not None
    if args.mode == "code":
        from bilevel.runtime.evaluation.code_trial import run_code_trial

        result = run_code_trial(client, policy, script=script, budget_s=budget, work_dir=work,
                                code_inputs=task.code_inputs(), trial_id=trial_id, gpu=gpu)
    else:
        result = executor.run_trial(
            client, policy, script=script, budget_s=budget, work_dir=work,
            **task.trial_inputs(), trial_id=trial_id, gpu=gpu,
        )
    if args.json:
        print(result.to_json())
    else:
        print(for_terminal(result.log_tail[-1500:], lines=True))   # the script's output: shown escaped
        print(f"trial {result.trial_id}: {result.status} ({for_terminal(result.reason)})")
        print(f"  val_bpb {result.val_bpb}  wall {result.wall_seconds:.1f} s  "
              f"training {result.training_seconds} s  peak_mem {result.peak_mem_mb} MB")
        if result.mode == "code":
            print(f"  code mode: val_bpb from the trusted evaluator; checkpoint {result.checkpoint_sha}; "
                  f"evaluation {result.evaluation_seconds}")
        print(f"  log: {work / 'log.txt'}")
    return 0 if result.status == "ok" else 1


def _run_config(args: argparse.Namespace):
    from bilevel.runtime.run.config import RunConfig

    task = _resolve(args, args.budget if args.smoke else None)
    cfg = RunConfig(
        task=args.task, llm=args.llm, levels=[x.strip() for x in args.levels.split(",") if x.strip()],
        iterations=args.iterations, budget=task.defaults_budget() if args.budget is None else args.budget,
        hours=args.hours, max_tokens=args.max_tokens,
        max_usd=args.max_usd, acceptance=args.acceptance, strategy_every=args.strategy_every,
        research_every=args.research_every, baseline_repeats=args.baseline_repeats
        or (3 if args.acceptance == "noise-aware" else 1),
        seed=args.seed, llm_base_url=args.llm_base_url, offline_fallback=args.offline_fallback,
        policy=args.policy, parallel=args.parallel, max_gpu_hours=args.max_gpu_hours,
        executor=args.executor, ray_address=args.ray_address,
        llm_fallback=list(getattr(args, "llm_fallback", None) or []), llm_context=getattr(args, "llm_context", None),
        mode=getattr(args, "mode", "params"),
        space=str(Path(args.space).resolve()) if args.space else "", smoke=args.smoke,
    )
    cfg.validate()
    cfg.bind(task)
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from bilevel.runtime.outputs.launch import execute
    from bilevel.runtime.run.config import default_run_dir

    cfg = _run_config(args)
    return execute(cfg, Path(args.run_dir) if args.run_dir else default_run_dir(cfg))


def cmd_resume(args: argparse.Namespace) -> int:
    from bilevel.runtime.outputs.launch import execute
    from bilevel.runtime.run.config import RunConfig

    run_dir = Path(args.run)
    if not (run_dir / "journal.db").exists():
        raise ValueError(f"{run_dir} holds no run (no journal.db)")
    with Journal.open_readonly(run_dir) as journal:
        old = dict(RunView.read(journal).config)
    old.pop("deadline", None)
    for key in ("hours", "iterations", "max_tokens", "max_usd", "max_gpu_hours"):
        if getattr(args, key) is not None:
            old[key] = getattr(args, key)
    return execute(RunConfig(**old), run_dir)


def cmd_status(args: argparse.Namespace) -> int:
    with Journal.open_readonly(Path(args.run)) as journal:
        summary = RunView.read(journal).status()
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"run {summary['run_id']}: {summary['state']} ({for_terminal(summary['state_reason'])})")
    print(f"  trials: {', '.join(f'{k} {v}' for k, v in summary['trials'].items() if v)}")
    print(f"  baseline {summary['baseline_val_bpb']}  best {summary['best_val_bpb']}")
    for m in summary["mechanisms"]:
        print(f"  mechanism {for_terminal(m['name'])} ({m['origin']}, {m['state']}): {m['calls']}")
    print(f"  llm: {summary['llm']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bilevel.runtime.outputs import report

    try:
        paths = report.write_report(Path(args.run))
    except OSError as exc:
        if not disk_full(exc):
            raise
        print(f"bilevel: report not written: {args.run}'s filesystem is full ({exc.strerror}); "
              "the previous files are left whole", file=sys.stderr)
        return DISK_FULL_EXIT
    for name, path in paths.items():
        print(f"{name}: {path}")
    for line in report.damaged_lines(Path(args.run)):
        print(line, file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from bilevel.runtime.outputs import mechanism_commands as mechanism_cli
    from bilevel.runtime.outputs import replay

    if args.kind == "trial":
        return replay.replay_trial(Path(args.run), int(args.id))
    return mechanism_cli.replay_mechanism_command(args.run, args.id)


def cmd_mechanism_check(args: argparse.Namespace) -> int:
    from bilevel.runtime.outputs import mechanism_commands as mechanism_cli

    return mechanism_cli.check_command(args.file, args.policy, args.json)


def add_checkout_args(p: argparse.ArgumentParser, extras: bool = True) -> None:
    """`--repo`, `--cache` (and with `extras` `--space`, `--smoke`): for `--task karpathy` only
    (`bilevel.inner.tasks.karpathy`); `bilevel ablate` takes the first two."""
    p.add_argument("--repo", help="a karpathy/autoresearch checkout whose prepare.py has run (--task karpathy)")
    p.add_argument("--cache", help="its data cache (default ~/.cache/autoresearch, as prepare.py has it)")
    if not extras:
        return
    p.add_argument("--space", metavar="FILE",
                   help="a TOML file that corrects the inferred search space: params, exclude, rules")
    p.add_argument("--smoke", action="store_true",
                   help="a first try: TIME_BUDGET 30 s (or --budget) and an 80th of the evaluation, "
                        "through a derived prepare.py; the checkout is not touched")


def cmd_ablate(args: argparse.Namespace) -> int:
    from bilevel.runtime.ablation.harness import ablate, default_out, settings_from_args

    settings = settings_from_args(args)
    return ablate(settings, Path(args.out) if args.out else default_out(settings))


def add_ablate_parser(subparsers) -> None:
    a = subparsers.add_parser("ablate", help="the paper's groups A-D as ordinary runs, with a shared noise floor")
    a.add_argument("--task", default="tinygpt")
    add_checkout_args(a, extras=False)
    a.add_argument("--llm", default="offline", help="a model name, or offline")
    a.add_argument("--llm-base-url", help="OpenAI-compatible endpoint (else BILEVEL_LLM_BASE_URL)")
    a.add_argument("--seeds", default="1,2", help="comma-separated; every group runs every seed")
    a.add_argument("--iterations", type=int, default=8, help="iterations of every group run")
    a.add_argument("--budget", type=float,
                   help="each trial's training budget, seconds (default: the task's own; tinygpt 30)")
    a.add_argument("--groups", default="A,B,C,D",
                   help="A: Level 1; B: 1,1.5; C: 1,1.5,2; D: 1,2")
    a.add_argument("--noise-repeats", type=int, default=3, help="baseline trials per seed for the noise floor")
    a.add_argument("--strategy-every", type=int, default=3, help="Level 1.5 every K iterations")
    a.add_argument("--research-every", type=int, default=2, help="Level 2 every M Level 1.5 cycles")
    a.add_argument("--max-tokens", type=int, help="for the whole ablation, split evenly across the group runs")
    a.add_argument("--max-usd", type=float, help="for the whole ablation, split evenly across the group runs")
    a.add_argument("--policy")
    a.add_argument("--out", help="the ablation folder (default runs/ablation-<hash of the settings>)")
    a.set_defaults(func=cmd_ablate)


class Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are one JSON object on stdout when the command line has --json."""

    json_errors = False

    def error(self, message: str):
        if Parser.json_errors:
            print(json.dumps({"error": f"{self.prog}: {message}", "exit_code": 2}))
            sys.exit(2)
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="bilevel", description="Sandboxed, budgeted bilevel autoresearch.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("doctor", help="check the daemon, images, GPUs and policy")
    d.add_argument("--policy")
    d.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="ray: also report the Ray cluster (nodes, CPUs, GPUs, a Docker daemon per node)")
    d.add_argument("--ray-address", help="a running Ray cluster (default: a local instance on 127.0.0.1)")
    d.add_argument("--task", default="karpathy", help="with --repo: the checkout's pre-flight too")
    add_checkout_args(d)
    d.set_defaults(func=cmd_doctor)

    img = sub.add_parser("images", help="build the sandbox images").add_subparsers(
        dest="images_command", required=True
    )
    b = img.add_parser("build", help="build base, trial and mechanism images (no registry)")
    b.add_argument("--base", default="bootstrap",
                   help="bootstrap (debootstrap + docker import), host, or an IMAGE name")
    b.add_argument("--checkout", metavar="PATH",
                   help="only the trial image of this checkout, from its uv.lock / pyproject.toml "
                        "(wheels fetched now, at setup; the build has no network)")
    b.add_argument("--torch", choices=["cpu", "cuda"], default="cpu",
                   help="with --checkout: the local CPU wheel, or CUDA torch from PyPI")
    b.set_defaults(func=cmd_images_build)

    t = sub.add_parser("trial", help="run one trial in the sandbox")
    t.add_argument("--task", default="tinygpt")
    add_checkout_args(t)
    t.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    t.add_argument("--script", help="run this file in place of the task's script (untrusted)")
    t.add_argument("--mode", choices=["params", "code"], default="params",
                   help="code: train the script, then measure its model with the trusted evaluator")
    t.add_argument("--budget", type=float, help="training budget in seconds (default: the task's own)")
    t.add_argument("--policy")
    t.add_argument("--out", help="folder for the trial's script, output and log")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_trial)

    r = sub.add_parser("run", help="a bilevel run (offline by default)")
    r.add_argument("--task", default="tinygpt")
    add_checkout_args(r)
    r.add_argument("--llm", default="offline", help="a model name, or offline")
    r.add_argument("--llm-base-url", help="OpenAI-compatible endpoint (else BILEVEL_LLM_BASE_URL)")
    r.add_argument("--levels", default="1,1.5,2")
    r.add_argument("--iterations", type=int, default=12)
    r.add_argument("--budget", type=float,
                   help="each trial's training budget, seconds (default: the task's own; tinygpt 30)")
    r.add_argument("--hours", type=float, help="wall-clock deadline of the run")
    r.add_argument("--max-tokens", type=int)
    r.add_argument("--max-usd", type=float)
    r.add_argument("--parallel", type=int, help="trials at once, each on its own CPUs/GPUs (default: the policy's)")
    r.add_argument("--max-gpu-hours", type=float, help="GPU-hours budget: each trial's GPUs x wall time")
    r.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="ray: one Ray task per trial, the same hardened container on the node's own daemon")
    r.add_argument("--ray-address", help="a running Ray cluster (default: a local instance on 127.0.0.1)")
    r.add_argument("--mode", choices=["params", "code"], default="params",
                   help="code: proposals edit the training code; a separate trusted evaluator measures it")
    r.add_argument("--acceptance", default="strict", choices=["strict", "noise-aware"])
    r.add_argument("--strategy-every", type=int, default=3, help="Level 1.5 every K iterations")
    r.add_argument("--research-every", type=int, default=2, help="Level 2 every M Level 1.5 cycles")
    r.add_argument("--baseline-repeats", type=int)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--offline-fallback", action="store_true",
                   help="when the LLM budget runs out, go on offline instead of ending the run")
    r.add_argument("--llm-fallback", action="append", metavar="MODEL@URL",
                   help="a further endpoint, tried in order when the one before is down (repeatable)")
    r.add_argument("--llm-context", type=int, metavar="N",
                   help="the model's context in tokens (default: what the endpoint reports, else 8192)")
    r.add_argument("--policy")
    r.add_argument("--run-dir")
    r.set_defaults(func=cmd_run)

    rs = sub.add_parser("resume", help="continue a run")
    rs.add_argument("run")
    for flag, typ in (("--hours", float), ("--iterations", int), ("--max-tokens", int), ("--max-usd", float),
                      ("--max-gpu-hours", float)):
        rs.add_argument(flag, type=typ, help="may only grow")
    rs.set_defaults(func=cmd_resume)

    st = sub.add_parser("status", help="show a run's state (works while it runs)")
    st.add_argument("run")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    rp = sub.add_parser("report", help="write report.md, results.tsv and progress.png")
    rp.add_argument("run")
    rp.set_defaults(func=cmd_report)

    rl = sub.add_parser("replay", help="re-run a recorded trial or mechanism in isolation")
    rl.add_argument("run")
    rl.add_argument("kind", choices=["trial", "mechanism"])
    rl.add_argument("id")
    rl.set_defaults(func=cmd_replay)

    mc = sub.add_parser("mechanism", help="mechanism tools").add_subparsers(dest="mechanism_command", required=True)
    chk = mc.add_parser("check", help="run the validation pipeline on one mechanism file")
    chk.add_argument("file")
    chk.add_argument("--policy")
    chk.add_argument("--json", action="store_true")
    chk.set_defaults(func=cmd_mechanism_check)
    add_ablate_parser(sub)
    return p


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through `finally`, so sandboxes are removed


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    """An error: under --json one JSON object on stdout ({error, exit_code}), else a line on stderr."""
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "exit_code": code}))
    else:
        print(f"bilevel: {for_terminal(message)}", file=sys.stderr)  # a message may quote untrusted text
    return code


def main(argv: list[str] | None = None) -> int:
    Parser.json_errors = "--json" in (sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    # SIGINT too, explicitly: a process started in the background inherits SIGINT ignored, and
    # then Ctrl-C or `kill -INT` would leave a trial's container running to its deadline.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        return args.func(args)
    except (engine.EngineUnavailable, ImageError, PolicyError, JournalError, ValueError, RayUnavailable) as exc:
        return _fail(args, str(exc), 2)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
