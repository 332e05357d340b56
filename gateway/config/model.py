"""The config file's schema: strict pydantic models, so unknown keys and wrong types are errors with a path."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

NonEmpty = Annotated[str, Field(min_length=1)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Strict(BaseModel):
    """Base for every config section: unknown keys are rejected and values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ServerConfig(Strict):
    host: NonEmpty = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    max_body_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024 * 1024
    max_response_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024


class TimeoutConfig(Strict):
    """Seconds: TCP connect, first byte (first token, for streams), silence between stream chunks, total."""

    connect: PositiveFloat = 5.0
    first_byte: PositiveFloat = 60.0
    idle: PositiveFloat | None = None
    """Defaults to `first_byte`."""
    total: PositiveFloat = 600.0


class AliasTimeoutConfig(Strict):
    """Per-alias overrides of the provider timeouts; `total` is the deadline for all attempts together."""

    connect: PositiveFloat | None = None
    first_byte: PositiveFloat | None = None
    idle: PositiveFloat | None = None
    total: PositiveFloat | None = None


class ProviderConfig(Strict):
    type: NonEmpty
    base_url: NonEmpty | None = None
    api_key: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: TimeoutConfig = Field(default_factory=TimeoutConfig)
    api_version: NonEmpty | None = None
    """Azure OpenAI's `api-version` query parameter."""
    responses_api: bool | None = None
    """Whether the upstream serves the Responses API itself (`/responses`); unset: the type's default."""
    stream_options: bool = True
    """Whether the upstream accepts `stream_options` (the gateway asks for streamed usage with it); false:
    it is never sent, and usage of streams without it is counted by the gateway."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value


Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Currency = Literal["USD", "CNY", "EUR"]


class PricingConfig(Strict):
    """Price per one million tokens; cached input and reasoning default to the input and output prices."""

    input: Price = 0.0
    cached_input: Price | None = None
    output: Price = 0.0
    reasoning: Price | None = None
    currency: Currency = "USD"


class LimitConfig(Strict):
    """Requests and tokens per minute (a sliding minute, shared by every gateway process on one Redis)."""

    rpm: Annotated[int, Field(ge=1)] | None = None
    tpm: Annotated[int, Field(ge=1)] | None = None


class BudgetConfig(Strict):
    """Spend cap for a key or a team in one currency; a new period starts from zero (UTC)."""

    amount: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    currency: Currency = "USD"
    period: Literal["daily", "monthly", "total"] = "monthly"


class RouteConfig(Strict):
    provider: NonEmpty
    model: NonEmpty
    weight: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    priority: int = 0
    """Routes of the highest priority that have a healthy member are used; lower tiers are the reserve."""
    rpm: Annotated[int, Field(ge=1)] | None = None
    """Requests per minute this route takes (per gateway process); at capacity it is skipped."""
    tpm: Annotated[int, Field(ge=1)] | None = None
    """Tokens per minute this route takes (per process), counted from an estimate of each request."""
    pricing: PricingConfig | None = None
    """This route's price, for the `cost` strategy; defaults to the alias's."""


DEFAULT_QUOTA_KEYWORDS = ("insufficient_quota", "quota", "balance", "billing", "余额", "欠费")


class CooldownConfig(Strict):
    """Circuit breaker per route: `failures` within `window` seconds take it out for `duration` seconds."""

    failures: Annotated[int, Field(ge=1)] = 3
    window: PositiveFloat = 60.0
    duration: PositiveFloat = 30.0
    keywords: list[str] = Field(default_factory=lambda: list(DEFAULT_QUOTA_KEYWORDS))
    """An upstream error whose code or message holds one of these cools the route at once."""


Strategy = Literal["weighted", "least_inflight", "lowest_latency", "cost"]


class StickyConfig(Strict):
    """Keep a conversation on one route while it is healthy, so the vendor's prompt cache keeps hitting."""

    by: Literal["user", "header"] = "user"
    """`user`: the request's `user` field; `header`: the value of `header`."""
    header: NonEmpty = "x-session-id"


class CacheConfig(Strict):
    """Exact-match response cache: the same request (model, messages, parameters) gets the stored answer."""

    ttl: PositiveFloat = 300.0
    shared: bool = False
    """Share entries between API keys; off: each key sees only answers to its own requests."""


class RetrievalConfig(Strict):
    """How an alias's knowledge bases are searched and their passages injected."""

    top_k: Annotated[int, Field(ge=1, le=50)] = 4
    min_similarity: Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)] = 0.25
    """A passage found only by meaning (no keyword in common) needs at least this cosine similarity."""
    template: NonEmpty | None = None
    """The system message; `{passages}` marks where the delimited passages go (plain text, not a template engine)."""
    rewrite_with: NonEmpty | None = None
    """A chat alias that rewrites the last user message into a standalone query using the conversation."""
    translate_with: NonEmpty | None = None
    """A chat alias that translates the query into the other language (zh <-> en); both are searched."""
    on_error: Literal["fail", "answer"] = "fail"
    """When retrieval fails (database down, embedder error): a 503, or the answer without passages."""


class ModelConfig(Strict):
    routes: Annotated[list[RouteConfig], Field(min_length=1)]
    mode: Literal["chat", "completion", "embedding"] = "chat"
    """What the alias serves; `switchyard test-routes` probes it accordingly."""
    strategy: Strategy = "weighted"
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    retry_on: list[Annotated[int, Field(ge=400, le=599)]] = Field(
        default_factory=lambda: [408, 429, 500, 502, 503, 504]
    )
    """Upstream statuses worth another attempt (connection errors and timeouts always are)."""
    fallbacks: list[NonEmpty] = Field(default_factory=list)
    context_window_fallbacks: list[NonEmpty] = Field(default_factory=list)
    content_policy_fallbacks: list[NonEmpty] = Field(default_factory=list)
    timeout: AliasTimeoutConfig | None = None
    cooldown: CooldownConfig = Field(default_factory=CooldownConfig)
    sticky: StickyConfig | None = None
    cache: CacheConfig | None = None
    reasoning: Literal["split", "keep", "drop"] = "keep"
    """`split`: <think> blocks in content move to reasoning_content; `drop`: reasoning is removed."""
    pricing: PricingConfig | None = None
    """The alias's price; absent: the upstream model's price from `prices` or the shipped table."""
    log_requests: bool = False
    """Keep each request's messages and answer in the usage ledger (off: token counts only)."""
    knowledge_bases: list[NonEmpty] = Field(default_factory=list)
    """Knowledge bases whose passages are injected into every request to this alias (chat only)."""
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)

    @field_validator("retry_on")
    @classmethod
    def _never_client_errors(cls, value: list[int]) -> list[int]:
        bad = sorted({s for s in value if s in (400, 401, 403, 404)})
        if bad:
            raise ValueError(f"{bad} are never retried: the same request would fail the same way")
        return value


class KeySpec(Strict):
    """What a client key may do; a file key adds its secret (`KeyConfig`), a managed key is stored hashed."""

    name: NonEmpty
    models: list[NonEmpty] | None = None
    """Aliases this key may call; absent means every alias."""
    cache: CacheConfig | None = None
    """Cache this key's answers on every alias (an alias's own cache settings apply where it has them)."""
    rpm: Annotated[int, Field(ge=1)] | None = None
    tpm: Annotated[int, Field(ge=1)] | None = None
    per_model: dict[NonEmpty, LimitConfig] = Field(default_factory=dict)
    """Limits of this key on one alias, on top of its overall `rpm`/`tpm`."""
    budget: BudgetConfig | None = None
    team: NonEmpty | None = None
    user: NonEmpty | None = None
    """Who the key belongs to, as the usage ledger records it."""


class KeyConfig(KeySpec):
    key: Annotated[str, Field(min_length=8)]


class TeamConfig(Strict):
    budget: BudgetConfig | None = None


class MeteringConfig(Strict):
    """The usage ledger's write-behind: events are queued, flushed in batches, spooled to disk when the
    database is down and replayed when it is back."""

    enabled: bool = True
    queue_size: Annotated[int, Field(ge=100)] = 100_000
    batch_size: Annotated[int, Field(ge=1, le=50_000)] = 1000
    flush_interval: PositiveFloat = 1.0
    on_db_down: Literal["serve", "reject"] = "serve"
    """`serve`: keep answering (usage goes to the spool); `reject`: 503 until the database is back."""
    retention_months: Annotated[int, Field(ge=1)] | None = None
    """Drop monthly ledger partitions older than this; absent: keep everything."""


class CacheStoreConfig(Strict):
    max_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    """Memory bound of the in-process cache (used when there is no redis_url)."""


class HealthCheckConfig(Strict):
    interval: PositiveFloat = 30.0
    """Seconds between checks of the routes whose cooldown ran out."""


class UrlPolicyConfig(Strict):
    """Which base URLs providers created through the admin API may have (file providers are trusted)."""

    allow_private: bool = False
    """Allow loopback and private networks (the company's own vLLM); cloud metadata addresses stay refused."""
    allow_hosts: list[NonEmpty] = Field(default_factory=list)
    deny_hosts: list[NonEmpty] = Field(default_factory=list)
    """Exact names or `*.example.com`; deny wins."""


class RagConfig(Strict):
    """Knowledge bases: uploads, ingestion and the bundled local embedder (all-MiniLM-L6-v2 in a worker process)."""

    max_upload_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024 * 1024
    chunk_tokens: Annotated[int, Field(ge=32, le=4000)] = 400
    chunk_overlap: Annotated[int, Field(ge=0, le=1000)] = 60
    local_embedder_python: NonEmpty | None = None
    """The embedder venv's interpreter; absent: $SWITCHYARD_EMBED_PYTHON, else ./.venv-embed/bin/python."""
    embed_batch: Annotated[int, Field(ge=1, le=1024)] = 32
    ingest_workers: Annotated[int, Field(ge=1, le=16)] = 1


class TrainerConfig(Strict):
    """Fine-tuning with LLaMA-Factory in its own venv; jobs, datasets and adapters live under data_dir/trainer."""

    venv: NonEmpty | None = None
    """The trainer's virtual environment; absent: .venv-trainer beside the gateway's own."""
    base_models: dict[NonEmpty, NonEmpty] = Field(default_factory=dict)
    """Name -> local model folder (Hugging Face layout): the only models jobs may start from."""
    devices: Annotated[list[NonEmpty], Field(min_length=1)] = Field(default_factory=lambda: ["cpu"])
    """One job at a time per device: `cpu`, or a CUDA device index such as `0`."""
    max_dataset_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024
    dashboard_port: Annotated[int, Field(ge=1, le=65535)] = 5092
    """Where `switchyard trainer dashboard` serves SwanLab's dashboard."""


class GatewayConfig(Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    redis_url: NonEmpty | None = None
    """Shared state (route cooldowns) across gateway processes; absent: in-process."""
    redis_prefix: NonEmpty = "switchyard"
    """Prefix of every Redis key and channel, so several gateways can share one Redis."""
    cache: CacheStoreConfig = Field(default_factory=CacheStoreConfig)
    health_checks: HealthCheckConfig | None = None
    """When set, cooled-down routes are probed in the background instead of with a user's request."""
    providers: dict[NonEmpty, ProviderConfig] = Field(default_factory=dict)
    models: dict[NonEmpty, ModelConfig] = Field(default_factory=dict)
    keys: list[KeyConfig] = Field(default_factory=list)
    teams: dict[NonEmpty, TeamConfig] = Field(default_factory=dict)
    prices: dict[NonEmpty, PricingConfig] = Field(default_factory=dict)
    """Prices by upstream model name, over the shipped table (an alias's own `pricing` wins over both)."""
    database_url: NonEmpty | None = None
    """PostgreSQL for the usage ledger; absent: SWITCHYARD_DATABASE_URL, else an embedded server in data_dir."""
    data_dir: NonEmpty = "./.switchyard"
    metering: MeteringConfig = Field(default_factory=MeteringConfig)
    on_redis_down: Literal["allow", "deny"] = "allow"
    """Rate limits and budgets when Redis does not answer: let requests through (logged, counted) or 503."""
    provider_urls: UrlPolicyConfig = Field(default_factory=UrlPolicyConfig)
    rag: RagConfig = Field(default_factory=RagConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    admin_key: Annotated[str, Field(min_length=16)] | None = None
    """Bearer key of the admin API's usage endpoints (until user accounts exist)."""
