"""Every admin route declares the role it needs (a route without one is a hole); the public ones are exactly
login and refresh."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar import Litestar

from gateway.admin.context import PUBLIC, RANK
from gateway.app import create_app
from gateway.config.loader import parse_config


@pytest.fixture
def app(tmp_path: Path) -> Litestar:
    cfg = parse_config(f"data_dir: {tmp_path}\nmetering: {{enabled: false}}\n", ["openai"])
    wrapped = create_app(cfg)
    inner: Litestar = wrapped.app.app  # access log -> fast data-plane paths -> Litestar
    return inner


def test_every_admin_route_declares_a_role(app: Litestar) -> None:
    declared: dict[tuple[str, str], str] = {}
    for route in app.routes:
        if not route.path.startswith("/admin/"):
            continue
        for handler in route.route_handlers:  # type: ignore[union-attr]
            for method in handler.http_methods - {"OPTIONS"}:  # type: ignore[union-attr]  (automatic preflight)
                role = handler.opt.get("role")
                assert role in RANK or role == PUBLIC, f"{method} {route.path} declares no role"
                declared[(method, route.path)] = role
    assert len(declared) >= 30
    public = sorted(path for (_, path), role in declared.items() if role == PUBLIC)
    assert public == ["/admin/api/auth/login", "/admin/api/auth/refresh"]
    assert declared[("POST", "/admin/api/teams")] == "owner"
    assert declared[("GET", "/admin/api/audit")] == "admin"
    kb, doc = "/admin/api/knowledge-bases", "/admin/api/knowledge-bases/{kb_ref:str}/documents"
    assert {k: v for k, v in declared.items() if k[1].startswith(kb)} == {
        ("GET", kb): "viewer",
        ("POST", kb): "admin",
        ("GET", kb + "/{kb_ref:str}"): "viewer",
        ("PATCH", kb + "/{kb_ref:str}"): "admin",
        ("DELETE", kb + "/{kb_ref:str}"): "admin",
        ("POST", kb + "/{kb_ref:str}/search"): "viewer",
        ("GET", doc): "viewer",
        ("POST", doc): "admin",
        ("GET", doc + "/{doc_ref:str}"): "viewer",
        ("DELETE", doc + "/{doc_ref:str}"): "admin",
        ("POST", doc + "/{doc_ref:str}/reindex"): "admin",
    }
    training, dataset, job = "/admin/api/training", "/admin/api/training/datasets", "/admin/api/training/jobs"
    assert {k: v for k, v in declared.items() if k[1].startswith(training)} == {
        ("GET", training + "/base-models"): "viewer",
        ("GET", training + "/dashboard"): "viewer",
        ("GET", dataset): "viewer",
        ("POST", dataset): "admin",
        ("GET", dataset + "/{name:str}"): "viewer",
        ("DELETE", dataset + "/{name:str}"): "admin",
        ("GET", dataset + "/{name:str}/preview"): "viewer",
        ("GET", job): "viewer",
        ("POST", job): "admin",
        ("GET", job + "/{name:str}"): "viewer",
        ("DELETE", job + "/{name:str}"): "admin",
        ("POST", job + "/{name:str}/cancel"): "admin",
        ("GET", job + "/{name:str}/logs"): "viewer",
        ("GET", job + "/{name:str}/metrics"): "viewer",
        ("GET", job + "/{name:str}/events"): "viewer",
        ("POST", job + "/{name:str}/deploy"): "admin",
        ("POST", job + "/{name:str}/undeploy"): "admin",
        ("GET", job + "/{name:str}/serve-command"): "admin",
    }


def test_the_openapi_schema_lists_the_admin_api(app: Litestar) -> None:
    paths = app.openapi_schema.to_schema()["paths"]
    assert {"/admin/api/keys", "/admin/api/providers/{name}", "/admin/api/auth/login"} <= set(paths)
    assert not any(path.startswith("/v1/chat") for path in paths)  # the raw data plane is not Litestar's to describe


def test_request_bodies_are_in_the_schema(app: Litestar) -> None:
    paths = app.openapi_schema.to_schema()["paths"]
    for path in ("/admin/api/keys", "/admin/api/providers", "/admin/api/users", "/admin/api/auth/login"):
        assert "requestBody" in paths[path]["post"], path
