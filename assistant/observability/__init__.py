"""The process's instruments: metrics, health and traces of what the engine does."""
