"""Prompts that fit: every prompt sent is within the model's context, with room for the answer."""

from __future__ import annotations

import json

import pytest

from bilevel.inner import tasks
from bilevel.inner.proposer import proposal_messages
from bilevel.outer import research, strategy
from bilevel.runtime.llm.client import LLMClient, LLMConfig, LLMError, RetryPolicy
from bilevel.runtime.llm.fit import PromptTooLong, fit_messages, prompt_limit, prompt_tokens
from bilevel.runtime.llm.parsing import fence

from fake_llm import FakeLLM, fake_llm_fixture  # noqa: F401 - the `fake_llm` fixture

CONTEXT, MAX_TOKENS = 2048, 512
SPACE = tasks.resolve("tinygpt", None, None).space


def _long_trace(n: int = 400) -> list[dict]:
    return [{"iteration": i, "changes": {"LEARNING_RATE": 0.001 * i}, "val_bpb": 2.0 - i / 1e4, "status": "ok",
             "kept": i % 7 == 0, "hypothesis": f"trial {i}: " + "a long rambling hypothesis " * 12,
             "source": "proposer"}
            for i in range(1, n + 1)]


def test_no_prompt_of_a_long_run_exceeds_the_context(fake_llm: FakeLLM) -> None:
    fake_llm.responder = lambda msgs: '{"changes": {"P1": 0.5}, "hypothesis": "h", "freeze": [], "unfreeze": []}'
    cfg = LLMConfig(base_url=fake_llm.base_url, model="m", api_key="k", max_tokens=MAX_TOKENS)
    client = LLMClient(cfg, retry=RetryPolicy(max_attempts=1), context_tokens=CONTEXT)
    trace = _long_trace()
    sections = [{"title": f"note {i}", "text": "x" * 2000} for i in range(6)]
    incumbent = dict(tasks.resolve("tinygpt", None, None).defaults())
    client.chat_json(proposal_messages(space=SPACE, active=sorted(SPACE), incumbent=incumbent,
                                       best=1.9, history=trace, sections=sections, guidance="g " * 1000,
                                       fence=fence), level="1", purpose="propose")
    conf = strategy.SearchConfig(active=sorted(SPACE))
    client.chat_json(strategy.llm_messages(conf, trace, fence), level="1.5", purpose="strategy")
    stand = [{"name": f"m{i}", "calls": {"suggest": i}, "iterations_active": i} for i in range(40)]
    research.llm_session(lambda msgs, name: client.chat(msgs, level="2", purpose=name).text, fence, trace, stand,
                         lambda source: (False, "rejected"))
    limit = prompt_limit(CONTEXT, MAX_TOKENS)
    sizes = [prompt_tokens(r.messages) for r in fake_llm.requests]
    assert len(sizes) >= 6 and max(sizes) <= limit
    explore = next(r.prompt for r in fake_llm.requests if "Explore:" in r.prompt)
    assert "cut here to fit the model's context" in explore
    assert "inner/loop.py" in explore and "Explore: where does this search waste trials?" in explore
    proposal = fake_llm.requests[0].prompt
    assert "Propose the next change as one JSON object." in proposal   # instructions are never cut


def test_at_the_default_context_the_newest_trials_survive_the_cut(fake_llm: FakeLLM) -> None:
    fake_llm.responder = lambda msgs: '{"freeze": [], "unfreeze": [], "guidance": "g"}'
    cfg = LLMConfig(base_url=fake_llm.base_url, model="m", api_key="k", max_tokens=2048)
    client = LLMClient(cfg, retry=RetryPolicy(max_attempts=1), context_tokens=4096)
    trace = _long_trace(15) + [{**t, "hypothesis": "x" * 3000} for t in _long_trace(1)]
    trace[-1]["iteration"] = 999
    client.chat_json(strategy.llm_messages(strategy.SearchConfig(active=sorted(SPACE)), trace, fence),
                     level="1.5", purpose="strategy")
    prompt = fake_llm.requests[0].prompt
    assert prompt_tokens(fake_llm.requests[0].messages) <= prompt_limit(4096, 2048)
    assert "cut here to fit" in prompt and prompt.index('"iteration": 999') > prompt.index("cut here to fit")


def test_a_cut_keeps_every_fence_intact() -> None:
    msgs = [{"role": "user", "content": "Trace:\n" + fence("q" * 20_000, "trace") + "\n\nAnswer in JSON."}]
    fitted = fit_messages(msgs, 1000)
    text = fitted[0]["content"]
    assert prompt_tokens(fitted) <= 1000 and text.startswith("Trace:\n(The trace block") and \
        text.endswith("Answer in JSON.")
    nonce = text.split("<<data:trace:")[1][:16]
    assert f"\n<<end:{nonce}>>" in text and text.count("\n<<end:") == 1
    assert msgs[0]["content"].count("q") == 20_000          # the caller's messages are not changed


def test_instructions_alone_over_the_limit_are_refused_not_sent(fake_llm: FakeLLM) -> None:
    with pytest.raises(PromptTooLong):
        fit_messages([{"role": "user", "content": "z" * 10_000}], 1000)
    records: list[dict] = []
    cfg = LLMConfig(base_url=fake_llm.base_url, model="m", api_key="k", max_tokens=MAX_TOKENS)
    client = LLMClient(cfg, retry=RetryPolicy(max_attempts=1), context_tokens=CONTEXT, on_call=records.append)
    with pytest.raises(LLMError, match="--llm-context"):
        client.chat([{"role": "user", "content": "z" * 10_000}], level="1", purpose="propose")
    assert not fake_llm.requests and records[-1]["outcome"] == "error"


def test_the_context_is_read_from_the_endpoint_where_it_says(fake_llm: FakeLLM) -> None:
    cfg = LLMConfig(base_url=fake_llm.base_url, model="fake-model", api_key="k")
    assert LLMClient(cfg).discover_context() is None
    fake_llm.context = 4096
    assert LLMClient(cfg).discover_context() == 4096
    assert json.loads(json.dumps(fake_llm.context)) == 4096
