"""How the router reads upstream failures: fallback causes, retryability, route failures, hard failures."""

from __future__ import annotations

import pytest

from gateway.config.model import DEFAULT_QUOTA_KEYWORDS
from gateway.config.snapshot import Alias
from gateway.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeout,
)
from gateway.routing.policy import (
    is_content_policy,
    is_context_window,
    is_hard_failure,
    is_retryable,
    is_route_failure,
)

DEFAULT_RETRY_ON: frozenset[int] = Alias(name="x", routes=()).retry_on
OPENAI_CONTEXT = (
    "This model's maximum context length is 8192 tokens. However, your messages resulted in 9001 tokens. "
    "Please reduce the length of the messages."
)


def err(status: int, message: str = "upstream failed", code: str | None = None) -> UpstreamStatusError:
    return UpstreamStatusError(message, upstream_status=status, code=code)


def test_default_retry_on() -> None:
    assert frozenset({408, 429, 500, 502, 503, 504}) == DEFAULT_RETRY_ON


# --- context window -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "exc",
    [
        err(400, OPENAI_CONTEXT, "context_length_exceeded"),  # OpenAI, DeepSeek, vLLM
        err(400, OPENAI_CONTEXT),  # the same wording without a code
        err(400, "Invalid 'messages[0].content': string too long.", "string_above_max_length"),
        err(400, "Input exceeds the context window of this model", "model_context_window_exceeded"),
        err(400, "prompt is too long: 208310 tokens > 200000 maximum", "invalid_request_error"),  # Anthropic
        err(413, "Input is too long for requested model."),  # Bedrock-style
        err(422, "Too many input tokens for this model"),
        err(400, "Requested tokens exceed the CONTEXT WINDOW"),
    ],
    ids=lambda e: f"{e.upstream_status}-{e.code}-{e.message[:30]}",
)
def test_context_window_errors(exc: UpstreamStatusError) -> None:
    assert is_context_window(exc)
    assert not is_content_policy(exc)


@pytest.mark.parametrize(
    "exc",
    [
        err(500, "context length computation crashed"),
        err(503, "maximum context length", "context_length_exceeded"),  # right words, wrong status
        err(429, "Rate limit reached for tokens per min (TPM): Limit 30000, Used 29000"),
        err(400, "Invalid value for 'temperature'", "invalid_value"),
        err(400, "Your request was rejected as a result of our safety system.", "content_policy_violation"),
        UpstreamTimeout("timed out reading the maximum context length"),
        UpstreamConnectError("context window"),
    ],
    ids=lambda e: f"{type(e).__name__}-{e.message[:30]}",
)
def test_not_context_window_errors(exc: UpstreamError) -> None:
    assert not is_context_window(exc)


# --- content policy -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "exc",
    [
        err(400, "Your request was rejected as a result of our safety system.", "content_policy_violation"),  # OpenAI
        err(
            400,
            "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            "content_filter",
        ),  # Azure
        err(400, "Input data may contain inappropriate content.", "data_inspection_failed"),  # Qwen / DashScope
        err(400, "Output blocked by content filtering policy", "invalid_request_error"),  # Anthropic-style wording
        err(400, "blocked", "content_filtered"),
        err(400, "request blocked", "data_inspection_failed"),  # the code alone is enough
        err(400, "request blocked", "content_policy_violation"),
        err(400, "request blocked", "content_filter"),
        err(403, "This request violates our content policy", None),
        err(422, "The prompt contains sensitive content"),
    ],
    ids=lambda e: f"{e.upstream_status}-{e.code}-{e.message[:30]}",
)
def test_content_policy_errors(exc: UpstreamStatusError) -> None:
    assert is_content_policy(exc)
    assert not is_context_window(exc)


@pytest.mark.parametrize(
    "exc",
    [
        err(500, "content policy service unavailable"),
        err(429, "content filter quota exceeded"),
        err(400, OPENAI_CONTEXT, "context_length_exceeded"),
        err(400, "Invalid content type: expected application/json"),
        err(401, "Incorrect API key provided", "invalid_api_key"),
        UpstreamConnectError("content policy"),
    ],
    ids=lambda e: f"{type(e).__name__}-{e.message[:30]}",
)
def test_not_content_policy_errors(exc: UpstreamError) -> None:
    assert not is_content_policy(exc)


# --- retryable ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "exc",
    [
        UpstreamConnectError("connection refused"),
        UpstreamTimeout("timed out"),
        UpstreamStreamError("stream broke"),
        UpstreamError("response too large"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_connection_errors_and_timeouts_are_always_retryable(exc: UpstreamError) -> None:
    assert is_retryable(exc, DEFAULT_RETRY_ON)
    assert is_retryable(exc, frozenset())
    assert is_retryable(exc, frozenset({503}))


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_default_retry_statuses(status: int) -> None:
    assert is_retryable(err(status), DEFAULT_RETRY_ON)
    assert not is_retryable(err(status), frozenset())


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 409, 413, 422, 501])
def test_other_statuses_are_not_retried_by_default(status: int) -> None:
    assert not is_retryable(err(status), DEFAULT_RETRY_ON)


def test_retry_on_decides_for_statuses() -> None:
    only_503 = frozenset({503})
    assert is_retryable(err(503), only_503)
    assert not is_retryable(err(500), only_503)
    assert not is_retryable(err(429), only_503)
    assert is_retryable(err(529), frozenset({529}))


# --- route failure --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "exc",
    [
        err(401),
        err(403, "Access denied"),
        err(404, "The model `gpt-9` does not exist", "model_not_found"),
        err(408),
        err(429),
        err(500),
        err(502),
        err(503),
        err(504),
        err(529, "Overloaded"),
        UpstreamConnectError("refused"),
        UpstreamTimeout("timed out"),
        UpstreamStreamError("broken"),
    ],
    ids=lambda e: f"{type(e).__name__}-{getattr(e, 'upstream_status', '')}",
)
def test_route_failures(exc: UpstreamError) -> None:
    assert is_route_failure(exc)


@pytest.mark.parametrize(
    "exc",
    [
        err(400, "Invalid value for 'temperature'"),
        err(400, OPENAI_CONTEXT, "context_length_exceeded"),
        err(409, "conflict"),
        err(413, "too large"),
        err(422, "unprocessable"),
    ],
    ids=lambda e: f"{e.upstream_status}-{e.code}",
)
def test_request_failures_are_not_route_failures(exc: UpstreamError) -> None:
    assert not is_route_failure(exc)


def test_content_policy_403_is_not_a_route_failure() -> None:
    """A 403 for the request's content speaks against the request, not the route (as `is_hard_failure` already
    knows): counting it lets a client's flagged prompts cool a route for everyone.
    """
    exc = err(403, "This request violates our content policy", "content_policy_violation")
    assert is_content_policy(exc)
    assert not is_route_failure(exc)


# --- hard failure ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "exc",
    [
        err(401, "Incorrect API key provided", "invalid_api_key"),
        err(401, "the upstream rejected the gateway's credentials: unauthorized", "upstream_auth_failed"),
        err(402, "Insufficient Balance"),  # DeepSeek
        err(403, "Access denied: your account is suspended"),
        err(429, "You exceeded your current quota, please check your plan and billing details.", "insufficient_quota"),
        err(429, "账户余额不足，请充值"),  # noqa: RUF001 - Chinese vendors: "insufficient balance, please top up"
        err(400, "Your credit balance is too low to access the Anthropic API."),
        err(403, "您的账户已欠费"),
    ],
    ids=lambda e: f"{e.upstream_status}-{e.code}-{e.message[:20]}",
)
def test_hard_failures(exc: UpstreamStatusError) -> None:
    assert is_hard_failure(exc, DEFAULT_QUOTA_KEYWORDS)


def test_hard_failure_by_code_alone() -> None:
    assert is_hard_failure(err(429, "Too many requests", "insufficient_quota"), DEFAULT_QUOTA_KEYWORDS)


def test_chinese_insufficient_balance() -> None:
    assert is_hard_failure(err(429, "余额不足"), DEFAULT_QUOTA_KEYWORDS)
    assert is_hard_failure(err(500, "余额不足"), ["余额不足"])


def test_custom_keywords_are_matched_case_insensitively() -> None:
    exc = err(400, "Access denied, please make sure your account is in good standing.", "Arrearage")  # DashScope
    assert not is_hard_failure(exc, ())
    assert is_hard_failure(exc, ["arrearage"])
    assert is_hard_failure(exc, ["ARREARAGE"])
    assert is_hard_failure(err(429, "TOKEN PLAN EXHAUSTED"), ["plan exhausted"])


def test_custom_keywords_replace_the_defaults() -> None:
    exc = err(429, "You exceeded your current quota", "insufficient_quota")
    assert is_hard_failure(exc, DEFAULT_QUOTA_KEYWORDS)
    assert not is_hard_failure(exc, ["arrearage"])


@pytest.mark.parametrize(
    ("exc", "keywords"),
    [
        (err(429, "Rate limit reached for requests", "rate_limit_exceeded"), DEFAULT_QUOTA_KEYWORDS),
        (err(500, "Internal server error"), DEFAULT_QUOTA_KEYWORDS),
        (err(503, "The engine is currently overloaded"), DEFAULT_QUOTA_KEYWORDS),
        (err(400, "Invalid value for 'temperature'"), DEFAULT_QUOTA_KEYWORDS),
        (err(404, "model not found", "model_not_found"), DEFAULT_QUOTA_KEYWORDS),
        (
            err(403, "Your request was rejected as a result of our safety system.", "content_policy_violation"),
            DEFAULT_QUOTA_KEYWORDS,
        ),
        (err(403, "Input data may contain inappropriate content.", "data_inspection_failed"), ()),
        (err(500, "anything at all"), ["", ""]),  # empty keywords match nothing
        (UpstreamConnectError("insufficient_quota"), DEFAULT_QUOTA_KEYWORDS),  # no status: never hard
        (UpstreamTimeout("balance"), DEFAULT_QUOTA_KEYWORDS),
    ],
    ids=lambda v: f"{type(v).__name__}-{getattr(v, 'upstream_status', '')}" if isinstance(v, Exception) else "",
)
def test_not_hard_failures(exc: UpstreamError, keywords: tuple[str, ...] | list[str]) -> None:
    assert not is_hard_failure(exc, keywords)
