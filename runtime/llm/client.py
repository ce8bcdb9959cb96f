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

from bilevel.runtime.llm.fit import PromptTooLong, fit_messages, prompt_limit
from bilevel.runtime.llm.parsing import FENCE_RULE, fence, parse_json
from bilevel.runtime.logs import get_logger
from bilevel.runtime.vocabulary import RESPONSE_FORMATS, LLMCallOutcome, ResponseFormat

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
    """A call failed after its retries; the message is redacted and names the last error.

    `outcome` is what the journal records (`error`, or `timeout` when the client gave up and
    closed the connection); `status` the last HTTP status, if any; `partial` what was streamed
    (and so paid for) before the client gave up; `failover` whether another endpoint may serve.
    """

    def __init__(self, message: str, attempts: int = 0, *, outcome: str = LLMCallOutcome.ERROR,
                 status: int | None = None, partial: Reply | None = None, failover: bool = False) -> None:
        super().__init__(message)
        self.attempts, self.outcome, self.status = attempts, outcome, status
        self.partial, self.failover = partial, failover


class _Unsupported(Exception):
    """The endpoint refused a request option (HTTP 400/422/500 with a response_format)."""

    def __init__(self, exc: openai.APIStatusError) -> None:
        super().__init__(str(exc))
        self.exc = exc


class _Abandoned(Exception):
    """The client stopped reading an answer (its deadline, a stopping run, an endless answer)."""

    def __init__(self, why: str, text: str) -> None:
        super().__init__(why)
        self.why, self.text = why, text


class _NoStream(Exception):
    """The endpoint's body held no stream event (not an OpenAI-compatible answer)."""


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
    response_format: str = ResponseFormat.PLAIN
    endpoint: str = ""


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


# An endpoint that answers one of these to a request carrying a response_format may simply not
# support that option (llama.cpp's server answers json_schema with a 500): step down, never fail.
_UNSUPPORTED_STATUSES = (400, 422, 500)
STREAM_SLACK_CHARS = 4096  # beyond 4 x max_tokens characters an answer ignores max_tokens: cut it


def response_format(fmt: str, schema: Mapping[str, Any] | None, name: str) -> dict | None:
    """The request's `response_format` for a format and a JSON schema (None: send none)."""
    if fmt == ResponseFormat.JSON_SCHEMA and schema is not None:
        return {"type": "json_schema", "json_schema": {"name": name, "schema": dict(schema), "strict": False}}
    if fmt == ResponseFormat.JSON_OBJECT_SCHEMA and schema is not None:
        return {"type": "json_object", "schema": dict(schema)}
    if fmt in (ResponseFormat.JSON_OBJECT, ResponseFormat.JSON_OBJECT_SCHEMA, ResponseFormat.JSON_SCHEMA):
        return {"type": "json_object"}
    return None


@dataclass
class Endpoint:
    """One model at one URL, with what this run has learnt it accepts (`formats`, strongest first)."""

    config: LLMConfig
    client: Any
    price_in: float
    price_out: float
    priced: bool
    formats: list[str] = field(default_factory=lambda: list(RESPONSE_FORMATS))

    @property
    def name(self) -> str:
        return f"{self.config.model}@{self.config.base_url or 'default'}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection error"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {str(exc)[:300]}"
    return f"{exc.__class__.__name__}: {str(exc)[:300]}"


class LLMClient:
    """Chat with one model under a run's budget; thread-safe accounting.

    `fallbacks` are further endpoints, tried in order when one is down past its retries (a
    connection error, a timeout, a 5xx or 429), within the same token and USD budgets. Every
    answer is streamed: on the client's deadline (`timeout_s` per attempt), when `should_stop()`
    says the run is stopping, or when an answer runs past max_tokens, the client closes the
    connection, which is how an OpenAI-compatible server learns to stop generating, and the call
    is journaled as `timeout` with what it had streamed. `on_progress(dict)` hears each round
    start, its streamed tokens so far, and its end (the live display's waiting line).
    """

    def __init__(
        self,
        config: LLMConfig,
        budget: Budget | None = None,
        retry: RetryPolicy | None = None,
        on_call: Callable[[dict], None] | None = None,
        run_id: str | None = None,
        price_overrides: Mapping[str, tuple[float, float]] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        fallbacks: Iterable[LLMConfig] = (),
        should_stop: Callable[[], bool] | None = None,
        on_progress: Callable[[dict], None] | None = None,
        context_tokens: int | None = None,
    ) -> None:
        self.config = config
        self.context_tokens = context_tokens   # None: prompts are sent as built (no fitting)
        self.budget = budget or Budget()
        self.retry = retry or RetryPolicy()
        self.on_call = on_call
        self.on_progress = on_progress
        self.should_stop = should_stop
        self.run_id = run_id
        self._sleep = sleep
        self._log = get_logger(run_id=run_id, trial_id=None, component="llm")
        self.endpoints = [self._endpoint(c, price_overrides) for c in (config, *fallbacks)]
        primary = self.endpoints[0]
        self._price_in, self._price_out, self.priced = primary.price_in, primary.price_out, primary.priced
        self._lock = threading.Lock()
        self._reserved_tokens = 0
        self._reserved_usd = 0.0
        self._usage: dict[str, Any] = {
            "calls": 0, "tokens_in": 0, "tokens_out": 0, "usd": 0.0,
            "malformed": 0, "errors": 0, "refused": 0, "per_level": {},
        }
        self._client = primary.client

    def _endpoint(self, config: LLMConfig, overrides: Mapping[str, tuple[float, float]] | None) -> Endpoint:
        price_in, price_out, priced = price_for(config, overrides)
        client = openai.OpenAI(
            base_url=config.base_url,
            api_key=config.api_key or "EMPTY",  # local servers need none; the SDK needs a string
            max_retries=0,
            timeout=config.timeout_s,
        )
        if not priced:
            self._log.warning("llm.unpriced_model", model=config.model,
                              note="cost counted as 0; give a price so a USD budget can bind")
        return Endpoint(config, client, price_in, price_out, priced)

    def __repr__(self) -> str:
        return f"LLMClient({self.config!r}, {self.budget!r}, {self.retry!r})"

    def close(self) -> None:
        for ep in self.endpoints:
            ep.client.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def discover_context(self) -> int | None:
        """The primary model's context in tokens, where its endpoint's model list says it
        (vLLM `max_model_len`, others `context_length`, `context_window`, `n_ctx`); else None."""
        try:
            models = self.endpoints[0].client.with_options(timeout=5.0).models.list()
            for model in models.data:
                extra = {**(getattr(model, "model_extra", None) or {}), "id": getattr(model, "id", None)}
                if extra["id"] not in (None, self.config.model) and len(models.data) > 1:
                    continue
                meta = extra.get("meta") if isinstance(extra.get("meta"), dict) else {}
                for key in ("max_model_len", "context_length", "context_window", "n_ctx"):
                    value = extra.get(key, meta.get(key))
                    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                        return value
        except Exception as exc:  # noqa: BLE001 - an endpoint without a model list is common
            self._log.info("llm.context_unknown", error=self._redact(_describe(exc))[:200])
        return None

    @property
    def response_formats(self) -> dict[str, str]:
        """What each endpoint has been found to accept so far: its strongest format."""
        return {ep.name: ep.formats[0] for ep in self.endpoints}

    # -- accounting -------------------------------------------------------------------------

    def _cost(self, tokens_in: int, tokens_out: int, ep: Endpoint | None = None) -> float:
        ep = ep or self.endpoints[0]
        return (tokens_in * ep.price_in + tokens_out * ep.price_out) / 1_000_000

    def _reserve(self, messages: list[dict], level: str, purpose: str) -> tuple[int, float]:
        """Check the call's worst case against the budgets and hold it until the call ends.
        The worst case is priced at the dearest endpoint of the chain, which may be the one to answer."""
        worst_tokens = estimate_tokens(_messages_text(messages)) + self.config.max_tokens
        worst_usd = max(self._cost(worst_tokens - self.config.max_tokens, self.config.max_tokens, ep)
                        for ep in self.endpoints)
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
        record = self._record(level, purpose, messages, outcome=LLMCallOutcome.BUDGET, error=reason)
        self._emit(record)
        raise BudgetExceeded(f"{reason} (level {level}, {purpose})")

    def _count(self, level: str, reply: Reply | None, outcome: str) -> None:
        """One journaled call in the totals (under the lock)."""
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
        if outcome in (LLMCallOutcome.ERROR, LLMCallOutcome.TIMEOUT):
            u["errors"] += 1
        if outcome == LLMCallOutcome.MALFORMED:
            u["malformed"] += 1
            lv["malformed"] += 1

    def _settle(self, held: tuple[int, float], level: str, reply: Reply | None,
                outcome: str) -> None:
        with self._lock:
            self._reserved_tokens -= held[0]
            self._reserved_usd -= held[1]
            self._count(level, reply, outcome)

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
        for ep in self.endpoints:
            key = ep.config.api_key
            if key and len(key) >= 4:
                text = text.replace(key, _REDACTED)
        return text

    def _record(self, level: str, purpose: str, messages: list[dict], *, outcome: str,
                reply: Reply | None = None, attempts: int = 0, latency_s: float = 0.0,
                error: str | None = None, endpoint: Endpoint | None = None,
                fmt: str | None = None) -> dict:
        canon = json.dumps(messages, sort_keys=True, ensure_ascii=False, default=str)
        ep = endpoint or self.endpoints[0]
        return {
            "level": level,
            "purpose": purpose,
            "model": ep.config.model,
            "prompt_sha256": hashlib.sha256(canon.encode()).hexdigest(),
            "tokens_in": reply.tokens_in if reply else 0,
            "tokens_out": reply.tokens_out if reply else 0,
            "usd": reply.usd if reply else 0.0,
            "priced": ep.priced,
            "latency_s": round(reply.latency_s if reply else latency_s, 4),
            "outcome": outcome,
            "attempts": reply.attempts if reply and not attempts else attempts,
            "error": self._redact(error) if error else None,
            "endpoint": reply.endpoint if reply else ep.name,
            "response_format": reply.response_format if reply else fmt,
        }

    def _emit(self, record: dict) -> None:
        # structlog's own `level` key is the log level, so the LLM level is logged as llm_level
        fields = {("llm_level" if k == "level" else k): v for k, v in record.items()
                  if k != "prompt_sha256"}
        if record["outcome"] == LLMCallOutcome.OK:
            self._log.info("llm.call", **fields)
        else:
            self._log.warning("llm.call", **fields)
        if self.on_call is not None:
            self.on_call(record)

    def _progress(self, **event: Any) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(event)
            except Exception:  # noqa: BLE001 - a display must never break a call
                self._log.warning("llm.progress_observer_failed")

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

    def _read_stream(self, stream: Any, ep: Endpoint, level: str, purpose: str) -> tuple[str, Any]:
        """The streamed answer's text and usage. Closing the stream closes the connection: on
        our deadline, a stopping run or an answer past max_tokens that is how the server is
        told to stop generating (a non-streamed request would go on after we gave up)."""
        parts: list[str] = []
        usage, events, chars = None, 0, 0
        deadline = time.monotonic() + ep.config.timeout_s
        limit = 4 * ep.config.max_tokens + STREAM_SLACK_CHARS
        try:
            for chunk in stream:
                events += 1
                usage = getattr(chunk, "usage", None) or usage
                for choice in getattr(chunk, "choices", None) or []:
                    text = getattr(getattr(choice, "delta", None), "content", None)
                    if text:
                        parts.append(text)
                        chars += len(text)
                self._progress(state="streaming", level=level, purpose=purpose,
                               tokens=math.ceil(chars / 4))
                why = None
                if time.monotonic() > deadline:
                    why = f"timeout: no complete answer within {ep.config.timeout_s:g} s"
                elif self.should_stop is not None and self.should_stop():
                    why = "timeout: the run is stopping"
                elif chars > limit:
                    why = f"timeout: the answer ran past max_tokens ({ep.config.max_tokens})"
                if why:
                    raise _Abandoned(why, "".join(parts))
        finally:
            stream.close()
        if not events:
            raise _NoStream("the endpoint's answer held no stream event")
        return "".join(parts), usage

    def _reply(self, ep: Endpoint, messages: list[dict], text: str, usage: Any, latency: float,
               attempts: int, fmt: str) -> Reply:
        tokens_in = getattr(usage, "prompt_tokens", None)
        tokens_out = getattr(usage, "completion_tokens", None)
        if tokens_in is None or tokens_out is None:  # no usage reported: count our estimate
            tokens_in = estimate_tokens(_messages_text(messages))
            tokens_out = estimate_tokens(text)
        return Reply(text=text, tokens_in=int(tokens_in), tokens_out=int(tokens_out),
                     usd=self._cost(int(tokens_in), int(tokens_out), ep), latency_s=latency,
                     attempts=attempts, priced=ep.priced, response_format=fmt, endpoint=ep.name)

    def _send(self, ep: Endpoint, messages: list[dict], level: str, purpose: str, fmt: str,
              schema: Mapping[str, Any] | None, schema_name: str) -> Reply:
        """One logical call to one endpoint in one format: retried transport, streamed answer.
        Raises _Unsupported (the format was refused) or LLMError."""
        attempts = 0
        rf = response_format(fmt, schema, schema_name)

        def attempt() -> tuple[str, Any]:
            nonlocal attempts
            attempts += 1
            kwargs: dict[str, Any] = {"model": ep.config.model, "messages": messages,
                                      "max_tokens": ep.config.max_tokens, "stream": True,
                                      "stream_options": {"include_usage": True}}
            if ep.config.temperature is not None:
                kwargs["temperature"] = ep.config.temperature
            if rf is not None:
                kwargs["response_format"] = rf
            try:
                stream = ep.client.chat.completions.create(**kwargs)
            except openai.APIStatusError as exc:
                if rf is not None and exc.status_code in _UNSUPPORTED_STATUSES:
                    raise _Unsupported(exc) from exc
                raise
            return self._read_stream(stream, ep, level, purpose)

        wait, stop = self._wait_plan()

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            self._log.warning("llm.retry", llm_level=level, purpose=purpose, attempt=attempts,
                              endpoint=ep.name, wait_s=round(wait(rs), 3),
                              error=self._redact(_describe(exc)) if exc else None)

        retrying = Retrying(stop=stop, wait=wait, retry=retry_if_exception(_retryable),
                            sleep=self._sleep, before_sleep=before_sleep, reraise=True)
        t0 = time.monotonic()
        try:
            text, usage = retrying(attempt)
        except _Unsupported:
            raise
        except _Abandoned as exc:
            partial = self._reply(ep, messages, exc.text, None, time.monotonic() - t0, attempts, fmt)
            raise LLMError(self._redact(exc.why), attempts, outcome=LLMCallOutcome.TIMEOUT,
                           partial=partial) from None
        except Exception as exc:  # noqa: BLE001 - every failure becomes a redacted LLMError
            message = f"{_describe(exc)} (after {attempts} attempt{'s' * (attempts != 1)})"
            timed_out = isinstance(exc, openai.APITimeoutError)
            raise LLMError(self._redact(message), attempts,
                           outcome=LLMCallOutcome.TIMEOUT if timed_out else LLMCallOutcome.ERROR,
                           status=getattr(exc, "status_code", None), failover=_retryable(exc)) from None
        return self._reply(ep, messages, text, usage, time.monotonic() - t0, attempts, fmt)

    def _send_stepping_down(self, ep: Endpoint, messages: list[dict], level: str, purpose: str,
                            schema: Mapping[str, Any] | None, schema_name: str) -> Reply:
        """Send in the strongest format the endpoint is still believed to accept; on a refusal,
        journal it and step down one format, and keep the step only if the weaker request is not
        refused the same way (then the option was not the cause: the formats are restored)."""
        if schema is None:
            return self._send(ep, messages, level, purpose, ResponseFormat.PLAIN, None, schema_name)
        dropped: list[str] = []
        while True:
            fmt = ep.formats[0]
            try:
                return self._send(ep, messages, level, purpose, fmt, schema, schema_name)
            except _Unsupported as refused:
                code = refused.exc.status_code
                self._log.warning("llm.format_unsupported", endpoint=ep.name, response_format=fmt,
                                  status=code, next=ep.formats[1])
                self._emit(self._record(level, purpose, messages, outcome=LLMCallOutcome.UNSUPPORTED,
                                        attempts=1, endpoint=ep, fmt=fmt,
                                        error=self._redact(_describe(refused.exc))))
                with self._lock:
                    self._count(level, None, LLMCallOutcome.UNSUPPORTED)
                dropped.append(ep.formats.pop(0))
            except LLMError as exc:
                if dropped and exc.status in _UNSUPPORTED_STATUSES and ep.formats[0] == ResponseFormat.PLAIN:
                    ep.formats[:0] = dropped   # plain failed too: it was never the format
                raise

    def _call(self, messages: list[dict], level: str, purpose: str,
              judge: Callable[[Reply], str] | None = None,
              schema: Mapping[str, Any] | None = None, schema_name: str = "answer") -> Reply:
        """Reserve budget, send (down the fallback chain), settle, and emit one record;
        `judge` may mark the answer malformed."""
        level = str(level)
        if self.context_tokens:
            try:
                messages = fit_messages(messages, prompt_limit(self.context_tokens, self.config.max_tokens))
            except PromptTooLong as exc:  # never sent over the limit: the caller falls back
                with self._lock:
                    self._count(level, None, LLMCallOutcome.ERROR)
                self._emit(self._record(level, purpose, messages, outcome=LLMCallOutcome.ERROR, error=str(exc)))
                raise LLMError(str(exc), 0) from None
        held = self._reserve(messages, level, purpose)
        t0 = time.monotonic()
        self._progress(state="start", level=level, purpose=purpose, tokens=0)
        try:
            for i, ep in enumerate(self.endpoints):
                try:
                    reply = self._send_stepping_down(ep, messages, level, purpose, schema, schema_name)
                    break
                except LLMError as exc:
                    if not exc.failover or i + 1 == len(self.endpoints):
                        self._settle(held, level, exc.partial, exc.outcome)
                        self._emit(self._record(level, purpose, messages, outcome=exc.outcome,
                                                reply=exc.partial, attempts=exc.attempts,
                                                latency_s=time.monotonic() - t0, error=str(exc), endpoint=ep,
                                                fmt=ep.formats[0] if schema else ResponseFormat.PLAIN))
                        raise
                    self._log.warning("llm.failover", endpoint=ep.name, next=self.endpoints[i + 1].name,
                                      error=str(exc)[:300])
                    self._emit(self._record(level, purpose, messages, outcome=exc.outcome, reply=exc.partial,
                                            attempts=exc.attempts, error=str(exc), endpoint=ep,
                                            fmt=ep.formats[0] if schema else ResponseFormat.PLAIN))
                    with self._lock:
                        self._count(level, exc.partial, exc.outcome)
        finally:
            self._progress(state="end", level=level, purpose=purpose, tokens=None)
        outcome = judge(reply) if judge else LLMCallOutcome.OK
        self._settle(held, level, reply, outcome)
        self._emit(self._record(level, purpose, messages, outcome=outcome, reply=reply, endpoint=ep))
        return reply

    def chat(self, messages: list[dict], *, level: str, purpose: str) -> Reply:
        """One chat completion. Raises BudgetExceeded (nothing sent) or LLMError (after retries)."""
        return self._call(list(messages), level, purpose)

    def chat_json(self, messages: list[dict], *, level: str, purpose: str,
                  schema: Mapping[str, Any] | None = None, schema_name: str = "answer") -> dict | None:
        """A JSON object from the model, repaired if need be, with one re-ask; None if hopeless.

        With a `schema`, the answer is asked for in the strongest form the endpoint accepts (a
        JSON schema, else JSON mode with the schema, else JSON mode, else plain); the repair and
        the re-ask stay as the last resort. Malformed output never raises; transport failures
        and budgets do, as in `chat`.
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
            return LLMCallOutcome.OK if parsed is not None else LLMCallOutcome.MALFORMED

        first = self._call(messages, level, purpose, judge, schema, schema_name)
        if parsed is not None:
            return parsed
        retry_messages = messages + [
            {"role": "assistant", "content": first.text[:4000]},
            {"role": "user", "content": _REASK.format(why=why)},
        ]
        self._call(retry_messages, level, f"{purpose}:reask", judge, schema, schema_name)
        return parsed
