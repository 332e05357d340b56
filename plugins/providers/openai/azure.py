"""`azure_openai`: Azure OpenAI deployments, which put the deployment in the URL and the key in `api-key`.

A route's `model` names the deployment; `api_version` the API version of the resource.
"""

from __future__ import annotations

from urllib.parse import quote

from gateway.config.model import ProviderConfig
from gateway.upstream.client import UpstreamClient
from plugins.providers.base import AdapterSettings
from plugins.providers.openai.adapter import OpenAIAdapter

DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIAdapter(OpenAIAdapter):
    def __init__(self, name: str, config: ProviderConfig, client: UpstreamClient, settings: AdapterSettings) -> None:
        super().__init__(name, config, client, settings)
        self.speaks_responses = False  # Azure's Responses API lives outside the deployment URLs used here

    def auth_headers(self) -> dict[str, str]:
        return {"api-key": self.config.api_key} if self.config.api_key else {}

    def url(self, path: str, model: str) -> str:
        version = quote(self.config.api_version or DEFAULT_API_VERSION, safe="")
        return f"{self.base_url}/openai/deployments/{quote(model, safe='')}{path}?api-version={version}"
