"""`switchyard secrets rotate`: stored provider credentials re-encrypted under the new key, audited, once."""

from __future__ import annotations

import base64
from pathlib import Path

from gateway.admin.cli import rotate
from gateway.admin.security.crypto import load_box
from gateway.admin.store import repo
from gateway.config.loader import parse_config
from gateway.store.engine import create_engine
from gateway.store.migrate import upgrade

OLD = base64.b64encode(b"o" * 32).decode()
NEW = base64.b64encode(b"n" * 32).decode()
SECRET = "sk-secret-1234567890abcd"


async def test_rotation_re_encrypts_under_the_new_key(empty_database_url: str, tmp_path: Path) -> None:
    await upgrade(empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        token = load_box({"SWITCHYARD_SECRET_KEY": OLD}).encrypt(SECRET, context="v")
        await repo.create_provider(engine, "v", "openai", api_key_enc=token)
        cfg = parse_config(f'database_url: "{empty_database_url}"\ndata_dir: "{tmp_path}"\n', ["openai"])
        both = load_box({"SWITCHYARD_SECRET_KEY": NEW, "SWITCHYARD_SECRET_KEY_OLD": OLD})
        assert await rotate(cfg, both) == (1, 0)
        assert await rotate(cfg, both) == (0, 1)  # already under the current key
        [row] = await repo.list_providers(engine)
        assert load_box({"SWITCHYARD_SECRET_KEY": NEW}).decrypt(row["api_key_enc"], context="v") == SECRET
        entries = await repo.list_audit(engine, 10, object_type="provider")
        assert [e["action"] for e in entries] == ["rotate-secret"]
        assert SECRET not in str(entries)
        assert await repo.get_version(engine) == 1
    finally:
        await engine.dispose()
