"""A chat assistant for teams: one engine behind Slack, Discord and a terminal chat."""
