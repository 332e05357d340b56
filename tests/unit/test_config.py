"""Config loading: YAML parsing, `${ENV}` interpolation, schema errors with paths, cross-checks and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config.loader import ConfigError, load_config, parse_config
from gateway.config.model import GatewayConfig

TYPES = ["openai"]

FULL = """
server: {host: 0.0.0.0, port: 9000, max_body_bytes: 2048}
providers:
  deepseek:
    type: openai
    base_url: https://api.deepseek.com/v1/
    api_key: ${DEEPSEEK_KEY}
    headers: {X-Team: ml}
    timeout: {connect: 2, first_byte: 30, total: 300}
  local: {type: openai, base_url: "http://127.0.0.1:8001/v1"}
models:
  chat:
    routes:
      - {provider: deepseek, model: deepseek-chat, weight: 3}
      - {provider: local, model: qwen-7b, weight: 1}
    fallbacks: [backup]
    pricing: {input: 0.27, cached_input: 0.07, output: 1.10, currency: USD}
  backup:
    routes: [{provider: local, model: qwen-7b}]
keys:
  - {name: crm, key: "${CRM_KEY}", models: [chat]}
  - {name: admin, key: admin-key-0123456789}
"""
ENV = {"DEEPSEEK_KEY": "sk-deepseek-secret", "CRM_KEY": "crm-key-abcdefgh"}


def problems(text: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, TYPES, env=env or {})
    return info.value.problems


def messages_at(text: str, path: str, env: dict[str, str] | None = None) -> list[str]:
    found = problems(text, env)
    msgs = [msg for p, msg in found if p == path]
    assert msgs, f"no problem at {path!r}; got {found}"
    return msgs


def provider(extra: str = "") -> str:
    return f"providers:\n  x: {{type: openai{extra}}}\n"


def test_full_config_values() -> None:
    cfg = parse_config(FULL, TYPES, env=ENV)
    assert (cfg.server.host, cfg.server.port, cfg.server.max_body_bytes) == ("0.0.0.0", 9000, 2048)
    ds = cfg.providers["deepseek"]
    assert ds.base_url == "https://api.deepseek.com/v1"  # trailing slash removed
    assert ds.api_key == "sk-deepseek-secret"
    assert ds.headers == {"X-Team": "ml"}
    assert (ds.timeout.connect, ds.timeout.first_byte, ds.timeout.total) == (2, 30, 300)
    assert cfg.providers["local"].api_key == ""
    chat = cfg.models["chat"]
    assert [(r.provider, r.model, r.weight) for r in chat.routes] == [
        ("deepseek", "deepseek-chat", 3.0),
        ("local", "qwen-7b", 1.0),
    ]
    assert chat.fallbacks == ["backup"]
    assert chat.pricing is not None
    assert (chat.pricing.input, chat.pricing.cached_input, chat.pricing.output) == (0.27, 0.07, 1.10)
    assert chat.pricing.currency == "USD"
    assert cfg.models["backup"].routes[0].weight == 1.0
    assert cfg.models["backup"].pricing is None
    assert [(k.name, k.key, k.models) for k in cfg.keys] == [
        ("crm", "crm-key-abcdefgh", ["chat"]),
        ("admin", "admin-key-0123456789", None),
    ]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_file_gives_defaults(text: str) -> None:
    cfg = parse_config(text, TYPES, env={})
    assert cfg == GatewayConfig()
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 8000)
    assert cfg.providers == {} and cfg.models == {} and cfg.keys == []


def test_env_default_used_when_unset_and_ignored_when_set() -> None:
    text = provider(", api_key: '${K:-fallback}'")
    assert parse_config(text, TYPES, env={}).providers["x"].api_key == "fallback"
    assert parse_config(text, TYPES, env={"K": "from-env"}).providers["x"].api_key == "from-env"
    assert parse_config(provider(", api_key: '${K:-}'"), TYPES, env={}).providers["x"].api_key == ""


def test_env_inside_lists_nested_maps_and_partial_strings() -> None:
    text = (
        "providers:\n  x:\n    type: openai\n    base_url: 'http://${HOST}:${P:-81}/v1'\n"
        "    headers: {X-A: '${A}', X-B: 'pre-${B:-b}-post', '${A}': v}\n"
        "models:\n  chat: {routes: [{provider: x, model: '${M}'}]}\n"
        "keys:\n  - {name: k, key: '${KEY}', models: ['${ALIAS}']}\n"
    )
    env = {"HOST": "h.local", "A": "aa", "M": "m-1", "KEY": "k" * 10, "ALIAS": "chat"}
    cfg = parse_config(text, TYPES, env=env)
    assert cfg.providers["x"].base_url == "http://h.local:81/v1"
    assert cfg.providers["x"].headers == {"X-A": "aa", "X-B": "pre-b-post", "${A}": "v"}  # keys stay literal
    assert cfg.models["chat"].routes[0].model == "m-1"
    assert cfg.keys[0].key == "k" * 10
    assert cfg.keys[0].models == ["chat"]


def test_env_value_is_not_interpolated_again() -> None:
    cfg = parse_config(provider(", api_key: '${K}'"), TYPES, env={"K": "${OTHER}"})
    assert cfg.providers["x"].api_key == "${OTHER}"


@pytest.mark.parametrize(("text", "env", "port"), [("${P}", {"P": "9123"}, 9123), ("${P:-8081}", {}, 8081)])
def test_numeric_port_from_env(text: str, env: dict[str, str], port: int) -> None:
    cfg = parse_config(f"server:\n  port: {text}\n", TYPES, env=env)
    assert cfg.server.port == port
    assert isinstance(cfg.server.port, int)


def test_unset_env_var_reported_at_key_path() -> None:
    text = provider(", api_key: '${MISSING}'") + "keys:\n  - {name: a, key: '${ALSO_MISSING}'}\n"
    found = problems(text)
    assert ("providers.x.api_key", "environment variable MISSING is not set and has no default") in found
    assert ("keys[0].key", "environment variable ALSO_MISSING is not set and has no default") in found
    assert len(found) == 2  # the empty key's min_length complaint is not reported twice


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("databse_url: x\n", "databse_url", "unknown key"),
        ("providers:\n  x: {type: openai, timeot: {connect: 1}}\n", "providers.x.timeot", "unknown key"),
        ("providers:\n  x: {type: openai, timeout: {conect: 1}}\n", "providers.x.timeout.conect", "unknown key"),
        ("server: {port: abc}\n", "server.port", "valid integer"),
        ("server: {port: 70000}\n", "server.port", "65535"),
        (provider(", base_url: ftp://h/v1"), "providers.x.base_url", "http:// or https://"),
        (provider(", base_url: api.example.com"), "providers.x.base_url", "http:// or https://"),
        ("providers:\n  x: {base_url: 'http://h'}\n", "providers.x.type", "Field required"),
        ("models:\n  a: {routes: []}\n", "models.a.routes", "at least 1"),
        ("models:\n  a: {}\n", "models.a.routes", "Field required"),
        (
            "models:\n  a: {routes: [{provider: x, model: m, weight: 0}]}\n",
            "models.a.routes[0].weight",
            "greater than 0",
        ),
        ("models:\n  a: {routes: [{provider: x, model: m, weight: -2}]}\n", "models.a.routes[0].weight", "greater"),
        (
            "models:\n  a: {routes: [{provider: x, model: m}], pricing: {currency: GBP}}\n",
            "models.a.pricing.currency",
            "USD",
        ),
        ("keys:\n  - {name: a, key: short}\n", "keys[0].key", "at least 8"),
    ],
)
def test_schema_errors_have_paths(text: str, path: str, fragment: str) -> None:
    assert any(fragment in msg for msg in messages_at(text, path))


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("providers:\n  x: {type: bogus}\n", "providers.x.type", "unknown provider type 'bogus'"),
        (provider() + "models:\n  a: {routes: [{provider: y, model: m}]}\n", "models.a.routes[0].provider", "'y'"),
        (
            provider() + "models:\n  a: {routes: [{provider: x, model: m}], fallbacks: [nope]}\n",
            "models.a.fallbacks[0]",
            "no model alias named 'nope'",
        ),
        (
            provider() + "models:\n  a: {routes: [{provider: x, model: m}], fallbacks: [a]}\n",
            "models.a.fallbacks[0]",
            "cannot fall back to itself",
        ),
        (
            provider() + "models:\n  a: {routes: [{provider: x, model: m}]}\n"
            "keys:\n  - {name: k, key: kkkkkkkk, models: [a, b]}\n",
            "keys[0].models[1]",
            "no model alias named 'b'",
        ),
        (
            "keys:\n  - {name: k, key: aaaaaaaa}\n  - {name: k, key: bbbbbbbb}\n",
            "keys[1].name",
            "duplicate key name 'k'",
        ),
        ("keys:\n  - {name: k, key: aaaaaaaa}\n  - {name: j, key: aaaaaaaa}\n", "keys[1].key", "used twice"),
    ],
)
def test_cross_check_errors_have_paths(text: str, path: str, fragment: str) -> None:
    assert any(fragment in msg for msg in messages_at(text, path))


def test_duplicate_key_value_message_does_not_echo_the_key() -> None:
    found = problems("keys:\n  - {name: k, key: '${K}'}\n  - {name: j, key: '${K}'}\n", {"K": "dup-secret-value"})
    assert found == [("keys[1].key", "the same key value is used twice")]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("server: [\n", "invalid YAML"),
        ("server:\n  port: 1\n  port: 2\n", "duplicate key 'port'"),
        ("- a\n- b\n", "mapping at the top level"),
        ("just a string\n", "mapping at the top level"),
    ],
)
def test_document_level_errors(text: str, fragment: str) -> None:
    found = problems(text)
    assert len(found) == 1
    assert found[0][0] == ""
    assert fragment in found[0][1]


@pytest.mark.parametrize("text", ["? [a, b]\n: 1\n", "{a: 1}: 2\n"])
def test_unhashable_mapping_key_is_a_config_error(text: str) -> None:
    """A list or map used as a key is a clear config error, not a TypeError."""
    found = problems(text)
    assert found and found[0][0] == ""


def test_yaml_merge_keys_are_supported() -> None:
    """`<<: *anchor` merges work, and a merged key may be overridden."""
    text = "providers:\n  a: &p {type: openai, api_key: kk}\n  b:\n    <<: *p\n    base_url: 'http://b'\n"
    cfg = parse_config(text, TYPES, env={})
    assert cfg.providers["b"].api_key == "kk"
    assert cfg.providers["b"].base_url == "http://b"
    override = "providers:\n  a: &p {type: openai, api_key: kk}\n  b: {<<: *p, api_key: other}\n"
    assert parse_config(override, TYPES, env={}).providers["b"].api_key == "other"


def test_several_schema_problems_reported_together() -> None:
    text = (
        "colour: red\nserver: {port: abc}\n"
        "providers:\n  x: {type: openai, api_key: '${NOPE}', timeot: 1}\n"
        "models:\n  a: {routes: [{provider: x, model: m, weight: 0}]}\n"
    )
    paths = {p for p, _ in problems(text)}
    assert paths == {"colour", "server.port", "providers.x.api_key", "providers.x.timeot", "models.a.routes[0].weight"}


def test_several_cross_check_problems_reported_together() -> None:
    text = (
        "providers:\n  x: {type: bogus}\n"
        "models:\n  a: {routes: [{provider: y, model: m}], fallbacks: [a, zz]}\n"
        "keys:\n  - {name: k, key: aaaaaaaa, models: [q]}\n  - {name: k, key: aaaaaaaa}\n"
    )
    paths = [p for p, _ in problems(text)]
    assert sorted(paths) == sorted(
        [
            "providers.x.type",
            "models.a.routes[0].provider",
            "models.a.fallbacks[0]",
            "models.a.fallbacks[1]",
            "keys[0].models[0]",
            "keys[1].name",
            "keys[1].key",
        ]
    )


@pytest.mark.parametrize(
    "text",
    [
        "keys:\n  - {name: k, key: '${SECRET}'}\n",
        "providers:\n  x: {type: openai, base_url: '${SECRET}'}\n",
        "providers:\n  x: {type: openai, headers: '${SECRET}'}\n",
        "providers:\n  x: {type: openai, timeout: {connect: '${SECRET}'}}\n",
        "server: {port: '${SECRET}'}\n",
    ],
)
def test_errors_never_contain_secret_env_values(text: str) -> None:
    secret = "hunter2"
    with pytest.raises(ConfigError) as info:
        parse_config(text, TYPES, env={"SECRET": secret})
    rendered = [str(info.value), *info.value.lines(), repr(info.value.problems)]
    assert info.value.problems
    assert not any(secret in part for part in rendered)


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml", TYPES, env={})
    assert "cannot read" in info.value.problems[0][1]


def test_load_config_reads_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(FULL, encoding="utf-8")
    assert load_config(path, TYPES, env=ENV).models["chat"].fallbacks == ["backup"]


def test_cli_check_config_reports_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server: {port: abc}\nproviders:\n  x: {type: openai, timeot: 1}\n", encoding="utf-8")
    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr()
    assert "ok" not in out.out
    assert "invalid config" in out.err
    assert "server.port: " in out.err
    assert "providers.x.timeot: unknown key" in out.err


def test_cli_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_cli_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(FULL.replace("${DEEPSEEK_KEY}", "sk-x").replace("${CRM_KEY}", "crm-key-123456"), encoding="utf-8")
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr()
    assert "ok" in out.out
    assert "2 providers, 2 models, 2 keys" in out.out
    assert out.err == ""


def test_redis_url_can_come_from_the_environment() -> None:
    text = "providers: {}\nmodels: {}\n"
    cfg = parse_config(text, ["openai"], env={"SWITCHYARD_REDIS_URL": "redis://cache:6379/0"})
    assert cfg.redis_url == "redis://cache:6379/0"
    own = parse_config("redis_url: redis://mine:6379/1\n", ["openai"], env={"SWITCHYARD_REDIS_URL": "redis://x/0"})
    assert own.redis_url == "redis://mine:6379/1"


RAG_BASE = provider() + (
    "models:\n"
    "  chat: {routes: [{provider: x, model: m}]}\n"
    "  emb: {mode: embedding, routes: [{provider: x, model: e}]}\n"
)


@pytest.mark.parametrize(
    ("extra", "path", "fragment"),
    [
        (
            "  kb-emb: {mode: embedding, routes: [{provider: x, model: e}], knowledge_bases: [hr]}\n",
            "models.kb-emb.knowledge_bases",
            "chat aliases only",
        ),
        (
            "  a: {routes: [{provider: x, model: m}], knowledge_bases: [hr], retrieval: {rewrite_with: nope}}\n",
            "models.a.retrieval.rewrite_with",
            "no model alias named 'nope'",
        ),
        (
            "  a: {routes: [{provider: x, model: m}], knowledge_bases: [hr], retrieval: {translate_with: emb}}\n",
            "models.a.retrieval.translate_with",
            "another chat alias",
        ),
        (
            "  a: {routes: [{provider: x, model: m}], knowledge_bases: [hr], retrieval: {rewrite_with: a}}\n",
            "models.a.retrieval.rewrite_with",
            "another chat alias",
        ),
        (
            "  a: {routes: [{provider: x, model: m}], knowledge_bases: [hr], retrieval: {template: 'no slot'}}\n",
            "models.a.retrieval.template",
            "{passages}",
        ),
    ],
)
def test_retrieval_settings_are_cross_checked(extra: str, path: str, fragment: str) -> None:
    assert any(fragment in msg for msg in messages_at(RAG_BASE + extra, path))


def test_retrieval_settings_parse() -> None:
    text = RAG_BASE + (
        "  a:\n    routes: [{provider: x, model: m}]\n    knowledge_bases: [hr, it]\n"
        "    retrieval: {top_k: 3, min_similarity: 0.4, rewrite_with: chat, translate_with: chat, on_error: answer}\n"
        "rag: {max_upload_bytes: 2048, chunk_tokens: 200}\n"
    )
    cfg = parse_config(text, TYPES, env={})
    model = cfg.models["a"]
    assert model.knowledge_bases == ["hr", "it"]
    assert (model.retrieval.top_k, model.retrieval.min_similarity, model.retrieval.on_error) == (3, 0.4, "answer")
    assert (cfg.rag.max_upload_bytes, cfg.rag.chunk_tokens) == (2048, 200)
