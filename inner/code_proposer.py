"""Code-mode proposals: an edit of the incumbent script (search/replace blocks) and a hypothesis.

Offline, the proposer draws the task's library of real code edits (`tasks/<task>/code_library.py`)
in order (rotated by the seed), each once. With an LLM, the prompt shows the current source, the trace and
the interface contract, each fenced as data, and asks for blocks in `code_edits`' format. Either
way the answer is text: `code_edits.apply_blocks` applies it on the host as text, never runs it.
"""

from __future__ import annotations

import importlib
import json

from .code_edits import Block

CODE_SYSTEM = (
    "You improve a small GPT training script to minimise val_bpb (validation bits per byte, lower is "
    "better) under a fixed training time budget, by editing its code. A separate trusted evaluator "
    "measures the model the script saves; nothing the script prints counts. Reply with a line "
    "'HYPOTHESIS: <one sentence>' and then one to four edit blocks, each exactly:\n"
    "<<<<<<< SEARCH\n<lines copied exactly from the current script>\n=======\n<their replacement>\n"
    ">>>>>>> REPLACE"
)

CONTRACT = (
    "The interface the evaluator relies on (an edit that breaks it makes the trial invalid): the "
    "script defines build_model(config) at top level, returning a torch.nn.Module whose forward maps "
    "int64 token ids (B, T) to logits (B, T, 256); its logits at position t may depend only on tokens "
    "at positions <= t; it keeps no state between forward calls; training runs only under "
    "`if __name__ == \"__main__\"`, reads data through harness.load_split('train') and get_batch, and "
    "ends with harness.save_model(model, config), config being what build_model receives. Keep the "
    "constants at the top as `NAME = literal` lines."
)


class OfflineCodeProposer:
    """The task's library of code edits, each drawn once, in the library's order rotated by the seed."""

    def __init__(self, task_name: str, seed: int, tried: set[str] = frozenset()) -> None:
        try:
            library = importlib.import_module(f"bilevel.inner.tasks.{task_name}.code_library").EDITS
        except ModuleNotFoundError:
            library = []
        # The library's order, rotated by the seed: seed 0 starts with its first entry.
        k = seed % len(library) if library else 0
        self.order = [e for e in library[k:] + library[:k] if e["name"] not in tried]

    def propose(self) -> dict | None:
        """The next edit of the library, or None once every one was drawn."""
        if not self.order:
            return None
        e = self.order.pop(0)
        return {"name": e["name"], "hypothesis": f"code edit {e['name']}: {e['hypothesis']}",
                "blocks": [Block(s, r) for s, r in e["blocks"]]}


def code_messages(*, source: str, best: float | None, history: list[dict], sections: list[dict],
                  guidance: str, fence) -> list[dict]:
    """The code-mode Level 1 prompt; the source, the trace and every mechanism note are data."""
    recent = [{k: (str(h.get(k) or "")[:200] if k == "hypothesis" else h.get(k))
               for k in ("iteration", "changes", "val_bpb", "status", "kept", "hypothesis")} for h in history[-20:]]
    parts = [CONTRACT,
             f"The current script (the incumbent, val_bpb {best}):\n" + fence(source, "script"),
             "Recent trials, newest last:\n" + fence(json.dumps(recent, indent=1), "history")]
    if guidance:
        parts.append("Guidance from the strategy level:\n" + fence(guidance, "guidance"))
    for s in sections:
        parts.append("Search mechanism note:\n" + fence(f"{s['title'][:80]}\n{s['text']}", "mechanism"))
    parts.append("Propose the next edit: the HYPOTHESIS line, then the blocks.")
    return [{"role": "system", "content": CODE_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]
