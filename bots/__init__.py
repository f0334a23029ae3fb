"""Platform adapters: translate Slack, Discord and terminal events to engine calls and back."""
