"""MCP servers as tools: declared in `PROMPTS_DIR/tools.yaml`, kept running by a supervisor
each, their tools in the registry as `server.tool` beside the built-ins (docs/tools.md)."""
