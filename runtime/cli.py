"""The `bilevel` command line: parse arguments, call the module that does the work, exit."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from ..inner import edits, tasks
from . import doctor, engine, executor, images
from .images import ImageError
from .policy import PolicyError, load


def cmd_images_build(args: argparse.Namespace) -> int:
    client = engine.connect(timeout=1800)
    t0 = time.monotonic()
    images.build(client, base=args.base, log=lambda m: print(f"images: {m}", flush=True))
    print(f"images: done in {time.monotonic() - t0:.1f} s")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    text, code = doctor.report(doctor.run_checks(args.policy))
    print(text)
    return code


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    changes = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise edits.EditError(f"--set {pair!r}: expected NAME=VALUE")
        changes[name.strip()] = value
    return changes


def trial_script(task: tasks.Task, sets: dict[str, str], budget: float | None) -> str:
    """The task's script with validated constants and the training budget written in."""
    values = edits.validate(sets, task.space)
    if budget is not None:
        values["TIME_BUDGET"] = budget
    return edits.apply(task.source(), values)


def cmd_trial(args: argparse.Namespace) -> int:
    policy = load(args.policy)
    task = tasks.load(args.task)
    if args.script:
        if args.set:
            raise edits.EditError("--set applies to the task's script; it cannot be combined with --script")
        script = Path(args.script).read_text()  # code mode: untrusted, run as it is
        budget = args.budget or task.defaults_budget()
    else:
        script = trial_script(task, _parse_sets(args.set), args.budget)
        budget = args.budget or task.defaults_budget()
    client = engine.connect()
    engine.sweep_orphans(client)
    trial_id = executor.new_trial_id()
    work = Path(args.out or Path("runs") / "trials" / trial_id)
    result = executor.run_trial(
        client, policy, script=script, budget_s=budget, work_dir=work,
        data_dir=task.data_dir(), harness_lib=task.harness_lib, trial_id=trial_id,
        gpu=policy.gpu_ids() is not None,
    )
    if args.json:
        print(result.to_json())
    else:
        print(result.log_tail[-1500:])
        print(f"trial {result.trial_id}: {result.status} ({result.reason})")
        print(f"  val_bpb {result.val_bpb}  wall {result.wall_seconds:.1f} s  "
              f"training {result.training_seconds} s  peak_mem {result.peak_mem_mb} MB")
        print(f"  log: {work / 'log.txt'}")
    return 0 if result.status == "ok" else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bilevel", description="Sandboxed, budgeted bilevel autoresearch.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("doctor", help="check the daemon, images, GPUs and policy")
    d.add_argument("--policy")
    d.set_defaults(func=cmd_doctor)

    img = sub.add_parser("images", help="build the sandbox images").add_subparsers(
        dest="images_command", required=True
    )
    b = img.add_parser("build", help="build base, trial and mechanism images (no registry)")
    b.add_argument("--base", default="bootstrap",
                   help="bootstrap (debootstrap + docker import), host, or an IMAGE name")
    b.set_defaults(func=cmd_images_build)

    t = sub.add_parser("trial", help="run one trial in the sandbox")
    t.add_argument("--task", default="tinygpt")
    t.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    t.add_argument("--script", help="run this file in place of the task's script (untrusted)")
    t.add_argument("--budget", type=float, help="training budget in seconds")
    t.add_argument("--policy")
    t.add_argument("--out", help="folder for the trial's script, output and log")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_trial)
    return p


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through `finally`, so sandboxes are removed


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except (engine.EngineUnavailable, ImageError, PolicyError, edits.EditError) as exc:
        print(f"bilevel: {exc}", file=sys.stderr)
        return 2


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
