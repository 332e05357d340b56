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
    """Seconds. `first_byte` also bounds the silence between two stream chunks."""

    connect: PositiveFloat = 5.0
    first_byte: PositiveFloat = 60.0
    total: PositiveFloat = 600.0


class ProviderConfig(Strict):
    type: NonEmpty
    base_url: NonEmpty | None = None
    api_key: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: TimeoutConfig = Field(default_factory=TimeoutConfig)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value


class RouteConfig(Strict):
    provider: NonEmpty
    model: NonEmpty
    weight: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0


class PricingConfig(Strict):
    """Price per one million tokens."""

    input: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    cached_input: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    output: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    currency: Literal["USD", "CNY", "EUR"] = "USD"


class ModelConfig(Strict):
    routes: Annotated[list[RouteConfig], Field(min_length=1)]
    fallbacks: list[NonEmpty] = Field(default_factory=list)
    pricing: PricingConfig | None = None


class KeyConfig(Strict):
    name: NonEmpty
    key: Annotated[str, Field(min_length=8)]
    models: list[NonEmpty] | None = None
    """Aliases this key may call; absent means every alias."""


class GatewayConfig(Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    providers: dict[NonEmpty, ProviderConfig] = Field(default_factory=dict)
    models: dict[NonEmpty, ModelConfig] = Field(default_factory=dict)
    keys: list[KeyConfig] = Field(default_factory=list)
