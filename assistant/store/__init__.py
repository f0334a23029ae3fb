"""Storage: SQLModel tables, the async engine, migrations and the repository the engine uses."""

from assistant.store.database import async_database_url, create_engine
from assistant.store.prompt_store import PromptStore, PromptVersionConflict
from assistant.store.repository import Store

__all__ = ["PromptStore", "PromptVersionConflict", "Store", "async_database_url", "create_engine"]
