"""compose.yaml and the Dockerfile say what the README promises (no Docker engine runs in CI to build them)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_the_stack_is_gateway_postgres_with_pgvector_and_redis() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"gateway", "db", "cache"}
    assert services["db"]["image"].startswith("pgvector/pgvector:")
    assert services["cache"]["image"].startswith("redis:")


def test_images_are_pinned_and_every_service_has_a_health_check() -> None:
    for name, service in COMPOSE["services"].items():
        assert "healthcheck" in service, name
        image = service.get("image", "")
        tag = image.rpartition(":")[2]
        assert tag and tag != "latest" and any(ch.isdigit() for ch in tag), f"{name}: {image}"
    assert "FROM python:3.11." in DOCKERFILE


def test_the_gateway_gets_its_urls_from_the_environment_and_waits_for_healthy_services() -> None:
    gateway = COMPOSE["services"]["gateway"]
    env = gateway["environment"]
    assert env["SWITCHYARD_DATABASE_URL"].startswith("postgresql+asyncpg://switchyard:${POSTGRES_PASSWORD")
    assert env["SWITCHYARD_REDIS_URL"] == "redis://cache:6379/0"
    assert gateway["depends_on"] == {"db": {"condition": "service_healthy"}, "cache": {"condition": "service_healthy"}}
    assert set(COMPOSE["volumes"]) == {"gateway-data", "db-data", "cache-data"}


def test_the_image_installs_the_hash_pinned_lock_and_runs_unprivileged() -> None:
    assert "pip install --require-hashes -r requirements.lock" in DOCKERFILE
    assert "USER switchyard" in DOCKERFILE
    assert "password" not in DOCKERFILE.lower()
