"""Software updates on the gateway: signed bundles, rollouts per role and site, transfers (docs/updates.md)."""

from gateway.update.config import UpdateConfig, read_update
from gateway.update.service import UpdateError, UpdateService, import_into
from gateway.update.store import Store

__all__ = ["UpdateConfig", "UpdateError", "UpdateService", "Store", "import_into", "read_update"]
