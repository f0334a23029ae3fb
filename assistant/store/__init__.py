"""Storage: SQLModel tables, the async engine, migrations and the repository the engine uses."""

from assistant.store.database import async_database_url, create_engine
from assistant.store.repository import PromptVersionConflict, Store

__all__ = ["PromptVersionConflict", "Store", "async_database_url", "create_engine"]
