"""`python -m assistant` is the `assistant` command."""

from assistant.cli import app

app(prog_name="assistant")
