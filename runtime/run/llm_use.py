"""The run's use of the LLM: one client for every level, each call journaled, budgets enforced.

Why here and not in the client: what a spent budget means is the run's business. It ends the
run as `finished` with the reason, or, with `--offline-fallback`, switches the run to offline
for the rest of it. An LLM that fails (after the client's retries) never crashes the loop: the
caller falls back to its offline rule.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from bilevel.runtime.journal.store import Journal
from bilevel.runtime.journal.view import RunView
from bilevel.runtime.llm.client import BudgetExceeded, LLMClient, LLMConfig, LLMError
from bilevel.runtime.llm.fit import DEFAULT_CONTEXT
from bilevel.runtime.run.budgets import Budgets, Stop
from bilevel.runtime.run.config import RunConfig, parse_endpoint
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
        self._answers_at_start: int | None = None
        self.waiting: dict | None = None          # the round being waited for, updated as it streams
        self.on_wait: Callable[[], None] | None = None   # told when a round starts and ends
        if cfg.llm != "offline":
            self.client = self._client(LLMConfig.from_env(base_url=cfg.llm_base_url, model=cfg.llm), budgets,
                                       run_id)

    def _client(self, config: LLMConfig, budgets: Budgets, run_id: str) -> LLMClient:
        """The run's client, its prompts fitted to the model's context: --llm-context, else what the
        endpoint reports, else DEFAULT_CONTEXT; an answer gets at most half of the context."""
        def build(config: LLMConfig, context: int | None) -> LLMClient:
            fallbacks = [replace(f, max_tokens=config.max_tokens) for f in fallback_configs(self.cfg.llm_fallback)]
            return LLMClient(config, budgets.llm_budget(self.journal.llm_totals()), on_call=self._record,
                             run_id=run_id, fallbacks=fallbacks, should_stop=lambda: _stopping(budgets),
                             on_progress=self._on_progress, context_tokens=context)

        client = build(config, None)
        context, source = self.cfg.llm_context, "--llm-context"
        if context is None:
            context, source = client.discover_context(), "the endpoint"
        if context is None:
            context, source = DEFAULT_CONTEXT, "the default"
        client.close()
        config = replace(config, max_tokens=min(config.max_tokens, context // 2))
        self.log.info("llm_context", tokens=context, source=source, max_tokens=config.max_tokens)
        self.journal.event("llm_context", {"tokens": context, "source": source, "max_tokens": config.max_tokens})
        return build(config, context)

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
            iteration=iteration, endpoint=rec.get("endpoint"), response_format=rec.get("response_format"),
        ))

    def _on_progress(self, event: dict) -> None:
        """The client's round events, kept as `waiting` for the display (its waiting line)."""
        state = event.get("state")
        if state == "start":
            self.waiting = {"level": event["level"], "purpose": event["purpose"], "tokens": 0,
                            "started_monotonic": time.monotonic()}
        elif state == "streaming" and self.waiting is not None:
            self.waiting["tokens"] = event.get("tokens") or 0
            return
        elif state == "end":
            self.waiting = None
        if self.on_wait is not None:
            self.on_wait()

    def check_unusable(self, view: RunView, limit: int) -> None:
        """K unusable LLM answers in a row (`llm.max_unusable`): say so loudly, and end the run as
        failed unless --offline-fallback (then the rest of the run is offline, and says so). A user
        paying for an LLM run must not wake up to an offline run that spent tokens."""
        if self._answers_at_start is None:   # a resumed run starts a fresh count: the endpoint may be fixed
            self._answers_at_start = len(view.llm_answers)
        streak = min(view.unusable_streak, len(view.llm_answers) - self._answers_at_start)
        if self.client is None or streak < limit:
            return
        reason = (f"the LLM's output was unusable {streak} times in a row (policy llm.max_unusable = "
                  f"{limit}); see the llm_calls in the journal and `bilevel report`")
        self.journal.event("llm_unusable", {"streak": streak, "limit": limit,
                                            "offline_fallback": self.cfg.offline_fallback})
        self.log.error("llm_unusable", streak=streak, limit=limit, offline_fallback=self.cfg.offline_fallback)
        if not self.cfg.offline_fallback:
            raise Stop(RunState.FAILED, reason)
        print(f"bilevel: {reason}; going on offline (--offline-fallback)", flush=True)
        self.client = None

    def chat_json(self, messages: list[dict], level: str, purpose: str,
                  schema: Mapping[str, Any] | None = None, schema_name: str = "answer") -> dict | None:
        """A JSON answer, or None (offline, or the LLM failed): the caller falls back."""
        if self.client is None:
            return None
        try:
            return self.client.chat_json(messages, level=level, purpose=purpose, schema=schema,
                                         schema_name=schema_name)
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


def fallback_configs(specs: list[str]) -> list[LLMConfig]:
    """`--llm-fallback MODEL@URL` endpoints. The primary's API key is never sent to them: a
    fallback gets BILEVEL_LLM_FALLBACK_API_KEY if set, else none (a local server needs none)."""
    key = os.environ.get("BILEVEL_LLM_FALLBACK_API_KEY", "")
    return [LLMConfig(base_url=url, model=model, api_key=key) for model, url in map(parse_endpoint, specs)]


def _stopping(budgets: Budgets) -> bool:
    """Whether a streamed answer should be cut off: a stop was asked for or the deadline passed."""
    left = budgets.time_left()
    return budgets.controls.stop_requested.is_set() or (left is not None and left <= 0)
