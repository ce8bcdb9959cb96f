"""The run's use of the LLM: one client for every level, each call journaled, budgets enforced.

Why here and not in the client: what a spent budget means is the run's business. It ends the
run as `finished` with the reason, or, with `--offline-fallback`, switches the run to offline
for the rest of it. An LLM that fails (after the client's retries) never crashes the loop: the
caller falls back to its offline rule.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.llm.client import BudgetExceeded, LLMClient, LLMConfig, LLMError
from bilevel.runtime.run.budgets import Budgets, Stop
from bilevel.runtime.run.config import RunConfig
from bilevel.runtime.vocabulary import RunState


class RunLLM:
    """`online` is False for an offline run, and after a spent budget under `--offline-fallback`."""

    def __init__(self, cfg: RunConfig, journal: Journal, budgets: Budgets, run_id: str, log,
                 iteration: Callable[[], int | None]) -> None:
        self.cfg, self.journal, self.log, self.iteration = cfg, journal, log, iteration
        self.client: LLMClient | None = None
        # The journal has one writer, the main thread: a call made in a worker thread (a proposal
        # drafted while trials run) leaves its journal writes here, and the main thread `drain`s them.
        self._writes: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        if cfg.llm != "offline":
            config = LLMConfig.from_env(base_url=cfg.llm_base_url, model=cfg.llm)
            self.client = LLMClient(config, budgets.llm_budget(journal.llm_totals()), on_call=self._record,
                                    run_id=run_id)

    @property
    def online(self) -> bool:
        return self.client is not None

    def _write(self, write: Callable[[], None]) -> None:
        if threading.current_thread() is threading.main_thread():
            self.drain()
            write()
        else:
            self._writes.put(write)

    def drain(self) -> None:
        """Journal, on the main thread and in order, what calls made in worker threads recorded."""
        while True:
            try:
                write = self._writes.get_nowait()
            except queue.Empty:
                return
            write()

    def _record(self, rec: dict) -> None:
        iteration = self.iteration()
        self._write(lambda: self.journal.record_llm_call(
            level=rec["level"], purpose=rec["purpose"], model=rec["model"], outcome=rec["outcome"],
            prompt_sha256=rec.get("prompt_sha256"), tokens_in=rec.get("tokens_in", 0),
            tokens_out=rec.get("tokens_out", 0), usd=rec.get("usd", 0.0),
            latency_s=rec.get("latency_s"), attempts=rec.get("attempts"), error=rec.get("error"),
            iteration=iteration,
        ))

    def chat_json(self, messages: list[dict], level: str, purpose: str) -> dict | None:
        """A JSON answer, or None (offline, or the LLM failed): the caller falls back."""
        if self.client is None:
            return None
        try:
            return self.client.chat_json(messages, level=level, purpose=purpose)
        except BudgetExceeded as exc:
            reason = exc.reason
            self._write(lambda: self.journal.event("llm_budget_exhausted", {"reason": reason}))
            if self.cfg.offline_fallback:
                self.log.warning("llm_budget_exhausted_fallback_offline", reason=exc.reason)
                self.client = None
                return None
            raise Stop(RunState.FINISHED, f"LLM budget exhausted: {exc.reason}") from None
        except LLMError as exc:
            self.log.warning("llm_call_failed", purpose=purpose, error=str(exc)[:200])
            return None

    def chat_text(self, messages: list[dict], level: str, purpose: str) -> str:
        """A free-text answer for a research round; a failure becomes text the session can read."""
        assert self.client is not None, "chat_text is for online runs"
        try:
            return self.client.chat(messages, level=level, purpose=purpose).text
        except BudgetExceeded as exc:
            raise Stop(RunState.FINISHED, f"LLM budget exhausted: {exc.reason}") from None
        except LLMError as exc:
            return f"(the LLM call failed: {exc})"
