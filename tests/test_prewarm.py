"""The SDK parts a turn uses are built before the first turn needs them (not on its critical path)."""

from __future__ import annotations

import openai

from assistant.agent.providers import prewarm


def test_prewarm_builds_the_resources_a_turn_uses() -> None:
    clients = [
        openai.AsyncOpenAI(api_key="test-key", base_url="http://127.0.0.1:9/v1"),
        openai.AsyncAzureOpenAI(api_key="test-key", azure_endpoint="http://127.0.0.1:9", api_version="2024-10-21"),
    ]
    for client in clients:
        assert not {"chat", "audio"} & set(vars(client))  # the SDK builds them on first use
    prewarm(clients)  # no request is sent: nothing listens on port 9
    for client in clients:
        assert "completions" in vars(client.chat)
        assert {"speech", "transcriptions"} <= set(vars(client.audio))
        assert "with_streaming_response" in vars(client.audio.speech)
