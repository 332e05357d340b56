"""The admin API's storage: its tables (on the gateway's shared metadata, created by migration 0002) and data access.

`repo` holds the async functions; its errors are re-exported here for the service layer to catch.
"""

from gateway.admin.store import repo, tables
from gateway.admin.store.repo import Conflict, InvalidValue, NotFoundError, StoreError, public

__all__ = ["Conflict", "InvalidValue", "NotFoundError", "StoreError", "public", "repo", "tables"]
