"""A preset's request rewrite reaches the vendor, and a fallback to another vendor sees the original request."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import start_gateway, stop_gateway
from tests.fakes.openai_upstream import FakeOpenAI


def test_qwen_gets_enable_thinking_and_the_fallback_gets_reasoning_effort(
    fake_upstream: FakeOpenAI, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{fake_upstream.port}/v1"
    config = f"""
providers:
  qwen: {{type: qwen, base_url: "{base}", api_key: "${{TEST_PROVIDER_KEY}}"}}
  plain: {{type: openai, base_url: "{base}"}}
models:
  thinker: {{routes: [{{provider: qwen, model: fail-500-qwen}}], max_retries: 0, fallbacks: [backup]}}
  backup: {{routes: [{{provider: plain, model: backup-model}}]}}
keys:
  - {{name: k, key: "${{TEST_FULL_KEY}}"}}
"""
    gw = start_gateway(config, tmp_path)
    fake_upstream.recorder.clear()
    try:
        reply = gw.client().chat.completions.create(
            model="thinker", messages=[{"role": "user", "content": "hi"}], reasoning_effort="high"
        )
    finally:
        stop_gateway(gw)
    assert reply.model == "backup-model"
    qwen, plain = (r.body for r in fake_upstream.recorder.requests)
    assert (qwen["enable_thinking"], qwen["thinking_budget"]) == (True, 24576)
    assert "reasoning_effort" not in qwen
    assert plain["reasoning_effort"] == "high" and "enable_thinking" not in plain
