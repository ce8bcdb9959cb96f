"""The LLM client: one OpenAI-compatible endpoint, with retries, accounting and hard budgets.

Why: an unattended overnight run must not overspend, must ride out rate limits and flaky
gateways without hammering them, must never leak its API key into logs or the journal,
and must treat what the model says as data. Every call yields a journal record.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import openai
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random_exponential

from bilevel.runtime.llm.parsing import FENCE_RULE, fence, parse_json
from bilevel.runtime.logs import get_logger

__all__ = [
    "FENCE_RULE", "Budget", "BudgetExceeded", "LLMClient", "LLMConfig", "LLMConfigError",
    "LLMError", "Reply", "RetryPolicy", "DEFAULT_PRICES", "estimate_tokens", "fence",
    "load_price_overrides", "parse_json", "price_for",
]

# USD per 1M (input, output) tokens, list prices when written; override for your account.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "gpt-3.5-turbo": (0.50, 1.50),
}

_REASK = (
    "Your previous reply was not valid JSON: {why}. Reply again with exactly one JSON object "
    "and nothing else: no prose, no code fences."
)
_REDACTED = "***"


class LLMConfigError(ValueError):
    """The endpoint, model or price settings are missing or unusable."""


class LLMError(RuntimeError):
    """A call failed after its retries; the message is redacted and names the last error."""

    def __init__(self, message: str, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts


class BudgetExceeded(RuntimeError):
    """A call was refused before it was sent because its worst case would break a budget."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LLMConfig:
    """Where and how to call. `repr` never shows the key."""

    base_url: str | None
    model: str
    api_key: str = field(default="", repr=False)
    timeout_s: float = 120.0
    max_tokens: int = 2048
    price_in_per_m: float | None = None
    price_out_per_m: float | None = None
    temperature: float | None = None

    def __post_init__(self) -> None:
        if not self.model:
            raise LLMConfigError("no model given: pass --llm MODEL or set BILEVEL_LLM_MODEL")
        if self.max_tokens < 1 or self.timeout_s <= 0:
            raise LLMConfigError("max_tokens must be >= 1 and timeout_s > 0")

    def __repr__(self) -> str:
        key = _REDACTED if self.api_key else "''"
        return (
            f"LLMConfig(base_url={self.base_url!r}, model={self.model!r}, api_key={key}, "
            f"timeout_s={self.timeout_s!r}, max_tokens={self.max_tokens!r}, "
            f"price_in_per_m={self.price_in_per_m!r}, price_out_per_m={self.price_out_per_m!r}, "
            f"temperature={self.temperature!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(
        cls,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> LLMConfig:
        """Arguments win; then BILEVEL_LLM_* variables; then OPENAI_BASE_URL / OPENAI_API_KEY."""
        env = os.environ if environ is None else environ

        def pick(arg: str | None, *names: str) -> str | None:
            if arg:
                return arg
            return next((env[n] for n in names if env.get(n)), None)

        return cls(
            base_url=pick(base_url, "BILEVEL_LLM_BASE_URL", "OPENAI_BASE_URL"),
            model=pick(model, "BILEVEL_LLM_MODEL") or "",
            api_key=pick(api_key, "BILEVEL_LLM_API_KEY", "OPENAI_API_KEY") or "",
            **kwargs,
        )


@dataclass(frozen=True)
class Budget:
    """Hard caps for the whole run; None means no cap."""

    max_tokens: int | None = None
    max_usd: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts, exponential back-off with full jitter (base, cap), and a cap on total waiting."""

    max_attempts: int = 5
    base_s: float = 1.0
    cap_s: float = 60.0
    max_total_wait_s: float = 300.0


@dataclass(frozen=True)
class Reply:
    """One completion's text and what it cost; `attempts` counts transport retries."""

    text: str
    tokens_in: int
    tokens_out: int
    usd: float
    latency_s: float
    attempts: int = 1
    priced: bool = True


def estimate_tokens(text: str) -> int:
    """A deliberately pessimistic guess: one token per four characters, rounded up."""
    return math.ceil(len(text) / 4)


def _messages_text(messages: Iterable[Mapping[str, Any]]) -> str:
    parts = []
    for m in messages:
        content = m.get("content")
        parts.append(content if isinstance(content, str) else json.dumps(content, default=str))
    return "\n".join(parts)


def load_price_overrides(path: str | Path) -> dict[str, tuple[float, float]]:
    """Read `"model" = { input = X, output = Y }` (USD per 1M tokens), optionally under [prices]."""
    data = tomllib.loads(Path(path).read_text())
    table = data.get("prices", data)
    out: dict[str, tuple[float, float]] = {}
    for model, entry in table.items():
        try:
            pin, pout = float(entry["input"]), float(entry["output"])
        except (TypeError, KeyError, ValueError) as exc:
            raise LLMConfigError(f"price for {model!r} needs numeric input and output") from exc
        if pin < 0 or pout < 0:
            raise LLMConfigError(f"price for {model!r} is negative")
        out[model] = (pin, pout)
    return out


def price_for(
    config: LLMConfig, overrides: Mapping[str, tuple[float, float]] | None = None
) -> tuple[float, float, bool]:
    """(input, output) USD per 1M tokens and whether the model is priced at all.

    The config's own prices win, then overrides, then defaults; a dated model name such as
    `gpt-4o-mini-2024-07-18` matches its longest listed prefix.
    """
    if config.price_in_per_m is not None and config.price_out_per_m is not None:
        return config.price_in_per_m, config.price_out_per_m, True
    for table in (overrides or {}, DEFAULT_PRICES):
        if config.model in table:
            return (*table[config.model], True)
        prefixes = [k for k in table if config.model.startswith(k + "-")]
        if prefixes:
            return (*table[max(prefixes, key=len)], True)
    return 0.0, 0.0, False


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `Retry-After` seconds or date)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 429) or exc.status_code >= 500
    return False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection error"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {str(exc)[:300]}"
    return f"{exc.__class__.__name__}: {str(exc)[:300]}"


class LLMClient:
    """Chat with one model under a run's budget; thread-safe accounting."""

    def __init__(
        self,
        config: LLMConfig,
        budget: Budget | None = None,
        retry: RetryPolicy | None = None,
        on_call: Callable[[dict], None] | None = None,
        run_id: str | None = None,
        price_overrides: Mapping[str, tuple[float, float]] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.budget = budget or Budget()
        self.retry = retry or RetryPolicy()
        self.on_call = on_call
        self.run_id = run_id
        self._sleep = sleep
        self._price_in, self._price_out, self.priced = price_for(config, price_overrides)
        self._log = get_logger(run_id=run_id, trial_id=None, component="llm")
        self._lock = threading.Lock()
        self._reserved_tokens = 0
        self._reserved_usd = 0.0
        self._usage: dict[str, Any] = {
            "calls": 0, "tokens_in": 0, "tokens_out": 0, "usd": 0.0,
            "malformed": 0, "errors": 0, "refused": 0, "per_level": {},
        }
        self._client = openai.OpenAI(
            base_url=config.base_url,
            api_key=config.api_key or "EMPTY",  # local servers need none; the SDK needs a string
            max_retries=0,
            timeout=config.timeout_s,
        )
        if not self.priced:
            self._log.warning("llm.unpriced_model", model=config.model,
                              note="cost counted as 0; give a price so a USD budget can bind")

    def __repr__(self) -> str:
        return f"LLMClient({self.config!r}, {self.budget!r}, {self.retry!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- accounting -------------------------------------------------------------------------

    def _cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self._price_in + tokens_out * self._price_out) / 1_000_000

    def _reserve(self, messages: list[dict], level: str, purpose: str) -> tuple[int, float]:
        """Check the call's worst case against the budgets and hold it until the call ends."""
        worst_tokens = estimate_tokens(_messages_text(messages)) + self.config.max_tokens
        worst_usd = self._cost(worst_tokens - self.config.max_tokens, self.config.max_tokens)
        with self._lock:
            u = self._usage
            used_tokens = u["tokens_in"] + u["tokens_out"] + self._reserved_tokens
            used_usd = u["usd"] + self._reserved_usd
            reason = None
            cap = self.budget.max_tokens
            if cap is not None and used_tokens + worst_tokens > cap:
                reason = (f"token budget: {used_tokens} of {cap} tokens used, and this call "
                          f"could use up to {worst_tokens} more")
            cap_usd = self.budget.max_usd
            if reason is None and cap_usd is not None and used_usd + worst_usd > cap_usd:
                reason = (f"USD budget: ${used_usd:.4f} of ${cap_usd:.4f} used, and this call "
                          f"could cost up to ${worst_usd:.4f} more")
            if reason is None:
                self._reserved_tokens += worst_tokens
                self._reserved_usd += worst_usd
                return worst_tokens, worst_usd
            u["refused"] += 1
        record = self._record(level, purpose, messages, outcome="budget", error=reason)
        self._emit(record)
        raise BudgetExceeded(f"{reason} (level {level}, {purpose})")

    def _settle(self, held: tuple[int, float], level: str, reply: Reply | None,
                outcome: str) -> None:
        with self._lock:
            self._reserved_tokens -= held[0]
            self._reserved_usd -= held[1]
            u = self._usage
            lv = u["per_level"].setdefault(
                level, {"calls": 0, "tokens_in": 0, "tokens_out": 0, "usd": 0.0, "malformed": 0})
            u["calls"] += 1
            lv["calls"] += 1
            if reply is not None:
                for k, v in (("tokens_in", reply.tokens_in), ("tokens_out", reply.tokens_out),
                             ("usd", reply.usd)):
                    u[k] += v
                    lv[k] += v
            if outcome == "error":
                u["errors"] += 1
            if outcome == "malformed":
                u["malformed"] += 1
                lv["malformed"] += 1

    def usage(self) -> dict:
        """Totals for the run and per level: calls, tokens, usd, malformed replies."""
        with self._lock:
            u = json.loads(json.dumps(self._usage))
        u["tokens"] = u["tokens_in"] + u["tokens_out"]
        for lv in u["per_level"].values():
            lv["tokens"] = lv["tokens_in"] + lv["tokens_out"]
        u["priced"] = self.priced
        return u

    # -- records ----------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        key = self.config.api_key
        return text.replace(key, _REDACTED) if key and len(key) >= 4 else text

    def _record(self, level: str, purpose: str, messages: list[dict], *, outcome: str,
                reply: Reply | None = None, attempts: int = 0, latency_s: float = 0.0,
                error: str | None = None) -> dict:
        canon = json.dumps(messages, sort_keys=True, ensure_ascii=False, default=str)
        return {
            "level": level,
            "purpose": purpose,
            "model": self.config.model,
            "prompt_sha256": hashlib.sha256(canon.encode()).hexdigest(),
            "tokens_in": reply.tokens_in if reply else 0,
            "tokens_out": reply.tokens_out if reply else 0,
            "usd": reply.usd if reply else 0.0,
            "priced": self.priced,
            "latency_s": round(reply.latency_s if reply else latency_s, 4),
            "outcome": outcome,
            "attempts": reply.attempts if reply else attempts,
            "error": self._redact(error) if error else None,
        }

    def _emit(self, record: dict) -> None:
        # structlog's own `level` key is the log level, so the LLM level is logged as llm_level
        fields = {("llm_level" if k == "level" else k): v for k, v in record.items()
                  if k != "prompt_sha256"}
        if record["outcome"] == "ok":
            self._log.info("llm.call", **fields)
        else:
            self._log.warning("llm.call", **fields)
        if self.on_call is not None:
            self.on_call(record)

    # -- calls ------------------------------------------------------------------------------

    def _wait_plan(self) -> tuple[Callable[[RetryCallState], float], Callable[..., bool]]:
        """Wait and stop functions sharing one planned wait per attempt (jitter drawn once)."""
        policy = self.retry
        jitter = wait_random_exponential(multiplier=policy.base_s, max=policy.cap_s)
        planned: dict[int, float] = {}

        def wait(rs: RetryCallState) -> float:
            if rs.attempt_number not in planned:
                exc = rs.outcome.exception() if rs.outcome else None
                asked = _retry_after(exc) if exc else None
                planned[rs.attempt_number] = asked if asked is not None else jitter(rs)
            return planned[rs.attempt_number]

        def stop(rs: RetryCallState) -> bool:
            if rs.attempt_number >= policy.max_attempts:
                return True
            return rs.idle_for + wait(rs) > policy.max_total_wait_s

        return wait, stop

    def _send(self, messages: list[dict], level: str, purpose: str) -> Reply:
        """One logical call: retried transport, usage and cost; raises LLMError when it fails."""
        attempts = 0

        def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            kwargs: dict[str, Any] = {"model": self.config.model, "messages": messages,
                                      "max_tokens": self.config.max_tokens}
            if self.config.temperature is not None:
                kwargs["temperature"] = self.config.temperature
            return self._client.chat.completions.create(**kwargs)

        wait, stop = self._wait_plan()

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            self._log.warning("llm.retry", llm_level=level, purpose=purpose, attempt=attempts,
                              wait_s=round(wait(rs), 3),
                              error=self._redact(_describe(exc)) if exc else None)

        retrying = Retrying(stop=stop, wait=wait, retry=retry_if_exception(_retryable),
                            sleep=self._sleep, before_sleep=before_sleep, reraise=True)
        t0 = time.monotonic()
        try:
            completion = retrying(attempt)
            choice = completion.choices[0]
            text = choice.message.content or ""
        except Exception as exc:  # noqa: BLE001 - every failure becomes a redacted LLMError
            message = f"{_describe(exc)} (after {attempts} attempt{'s' * (attempts != 1)})"
            raise LLMError(self._redact(message), attempts) from None
        latency = time.monotonic() - t0
        usage = getattr(completion, "usage", None)
        tokens_in = getattr(usage, "prompt_tokens", None)
        tokens_out = getattr(usage, "completion_tokens", None)
        if tokens_in is None or tokens_out is None:  # no usage reported: count our estimate
            tokens_in = estimate_tokens(_messages_text(messages))
            tokens_out = estimate_tokens(text)
        return Reply(text=text, tokens_in=int(tokens_in), tokens_out=int(tokens_out),
                     usd=self._cost(int(tokens_in), int(tokens_out)), latency_s=latency,
                     attempts=attempts, priced=self.priced)

    def _call(self, messages: list[dict], level: str, purpose: str,
              judge: Callable[[Reply], str] | None = None) -> Reply:
        """Reserve budget, send, settle, and emit one record; `judge` may mark it malformed."""
        level = str(level)
        held = self._reserve(messages, level, purpose)
        t0 = time.monotonic()
        try:
            reply = self._send(messages, level, purpose)
        except LLMError as exc:
            self._settle(held, level, None, "error")
            self._emit(self._record(level, purpose, messages, outcome="error",
                                    attempts=exc.attempts, latency_s=time.monotonic() - t0,
                                    error=str(exc)))
            raise
        outcome = judge(reply) if judge else "ok"
        self._settle(held, level, reply, outcome)
        self._emit(self._record(level, purpose, messages, outcome=outcome, reply=reply))
        return reply

    def chat(self, messages: list[dict], *, level: str, purpose: str) -> Reply:
        """One chat completion. Raises BudgetExceeded (nothing sent) or LLMError (after retries)."""
        return self._call(list(messages), level, purpose)

    def chat_json(self, messages: list[dict], *, level: str, purpose: str) -> dict | None:
        """A JSON object from the model, repaired if need be, with one re-ask; None if hopeless.

        Malformed output never raises; transport failures and budgets do, as in `chat`.
        """
        messages = list(messages)
        why = ""
        parsed: dict | None = None

        def judge(reply: Reply) -> str:
            nonlocal parsed, why
            try:
                parsed, why = parse_json(reply.text)
            except Exception as exc:  # noqa: BLE001 - malformed output must never raise
                parsed, why = None, f"{exc.__class__.__name__} while parsing"
            return "ok" if parsed is not None else "malformed"

        first = self._call(messages, level, purpose, judge)
        if parsed is not None:
            return parsed
        retry_messages = messages + [
            {"role": "assistant", "content": first.text[:4000]},
            {"role": "user", "content": _REASK.format(why=why)},
        ]
        self._call(retry_messages, level, f"{purpose}:reask", judge)
        return parsed
