"""The `switchyard` command as a user runs it: check-config, serve with several workers, bad configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port, gateway_config, start_gateway, stop_gateway
from tests.fakes.openai_upstream import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]


def _switchyard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_example_config_is_valid() -> None:
    result = _switchyard(
        "check-config", str(ROOT / "examples/gateway.yaml"), env={"SWITCHYARD_DEMO_KEY": "sk-demo-0123456789"}
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_check_config_prints_every_problem_with_its_path(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "server: {port: 99999}\n"
        "providers:\n  p: {type: nosuch, base_url: ftp://x}\n"
        "models:\n  a: {routes: [{provider: missing, model: m}], fallbacks: [zzz]}\n"
        "keys:\n  - {name: k, key: '${UNSET_SWITCHYARD_VAR}'}\n"
        "surprise: true\n"
    )
    result = _switchyard("check-config", str(cfg), env={"UNSET_SWITCHYARD_VAR": "sk-secret-value-123"})
    assert result.returncode == 1
    for expected in ("server.port", "providers.p.base_url", "surprise: unknown key"):
        assert expected in result.stderr
    assert "sk-secret-value-123" not in result.stderr + result.stdout


def test_serve_refuses_an_invalid_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("models:\n  a: {routes: [{provider: missing, model: m}]}\n")
    result = _switchyard("serve", "--config", str(cfg), "--port", str(free_port()))
    assert result.returncode == 1
    assert "models.a.routes[0].provider: no provider named 'missing'" in result.stderr


def test_serve_with_two_workers(fake_upstream: FakeOpenAI, tmp_path: Path) -> None:
    gw = start_gateway(gateway_config(fake_upstream.port, free_port()), tmp_path, workers=2)
    try:
        client = gw.client()
        answers = {
            client.chat.completions.create(model="echo", messages=[{"role": "user", "content": str(i)}])
            .choices[0]
            .message.content
            for i in range(20)
        }
        assert answers == {f"echo: {i}" for i in range(20)}
    finally:
        stop_gateway(gw)
    assert gw.log_text().count("Started server process") == 2
    assert gw.process.returncode == 0  # a clean shutdown on SIGTERM
