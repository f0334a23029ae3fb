"""Slack's start-up checks: each token asked about once, and a refusal or an unreachable API
said in one line naming the setting to fix (SlackSetupError), never a retry loop of tracebacks."""

from __future__ import annotations

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from assistant.config import ConfigError

_NETWORK = (aiohttp.ClientError, OSError, TimeoutError)


class SlackSetupError(ConfigError):
    """Slack cannot be served as configured; the message names the setting to fix."""


async def check_app_token(client: AsyncWebClient, app_token: str) -> None:
    """Socket Mode's first connection, asked for once: slack-sdk's own client retries a failed
    one forever."""
    try:
        await client.apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        raise SlackSetupError(
            f"SLACK_APP_TOKEN: Slack refused it ({exc.response.get('error')}); use an "
            "app-level token (xapp-…) with the connections:write scope"
        ) from None
    except _NETWORK as exc:
        raise unreachable(client, exc) from None


async def check_bot_token(client: AsyncWebClient) -> str:
    """Whether SLACK_BOT_TOKEN works (auth.test), else every event would fail later, each with
    a traceback, and nobody would be answered. Returns the bot's user id."""
    try:
        response = await client.auth_test()
    except SlackApiError as exc:
        raise SlackSetupError(
            f"SLACK_BOT_TOKEN: Slack refused it ({exc.response.get('error')}); copy the "
            "Bot User OAuth Token (xoxb-…) again from the app's OAuth & Permissions page"
        ) from None
    except _NETWORK as exc:
        raise unreachable(client, exc) from None
    return str(response.get("user_id") or "")


def unreachable(client: AsyncWebClient, exc: BaseException) -> SlackSetupError:
    return SlackSetupError(
        f"SLACK_API_URL: cannot reach Slack at {client.base_url} "
        f"({type(exc).__name__}: {exc}); check that this machine can reach it"
    )
