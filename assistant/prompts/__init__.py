"""Prompt operations: version files, which version answers where, and resolving it per turn."""
