"""`python -m bots` is the `assistant` command (the shell is a surface like Slack and Discord)."""

from bots.cli import app

app(prog_name="assistant")
