"""Image generation, for `<prefix>/image/generate` and the agent's `generate_image` tool.

Results are published as JSON on `<prefix>/image`, and the first image also as raw
base64 on `<prefix>/image/b64`, retained, which is what Home Assistant's MQTT image
entity reads: the picture shows on a dashboard. A model that answers with a URL (DALL-E
does unless asked for base64) has its picture fetched first, so the entity shows it
either way; the URL is also published on `<prefix>/image/url`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai

from assistant.agent.tools import Tool, ToolOutcome
from assistant.config import ImagesConfig
from assistant.daemon.payloads import BadRequest, new_id, optional_str, text_request

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 4000
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # a 4096x4096 PNG is well below; anything bigger is not a picture for a dashboard
FETCH_TIMEOUT_S = 30.0


async def fetch_image(url: str, timeout_s: float = FETCH_TIMEOUT_S) -> bytes:
    """Download a picture handed out as a URL; RuntimeError says why it could not be.

    The URL is a signed link: errors name only its host, never its query (the signature).
    """
    host = urlsplit(url).hostname or "?"
    data = bytearray()
    try:
        async with (
            httpx2.AsyncClient(timeout=timeout_s, follow_redirects=True) as http,
            http.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise RuntimeError(f"the picture could not be fetched from {host}: HTTP {response.status_code}")
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > MAX_IMAGE_BYTES:
                    raise RuntimeError(f"the picture at {host} is larger than {MAX_IMAGE_BYTES >> 20} MB")
    except httpx2.HTTPError as error:
        raise RuntimeError(f"the picture could not be fetched from {host}: {type(error).__name__}") from None
    return bytes(data)


@dataclass(frozen=True)
class ImageRequest:
    """A validated request from `<prefix>/image/generate` or the tool."""

    prompt: str
    id: str
    size: str | None = None
    quality: str | None = None
    style: str | None = None
    n: int | None = None


def parse_image_request(payload: bytes) -> ImageRequest:
    """`{"prompt", "size", "quality", "style", "n", "id"}` or a plain-text prompt."""
    data, prompt, request_id = text_request(payload, "prompt", MAX_PROMPT_CHARS)
    n = data.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4):
        raise BadRequest("'n' must be a whole number from 1 to 4", request_id)
    options = {key: optional_str(data, key, request_id) for key in ("size", "quality", "style")}
    return ImageRequest(prompt, request_id or new_id(), n=n, **options)


class ImageMaker:
    """Calls the images endpoint with the configured defaults and the request's overrides."""

    def __init__(self, config: ImagesConfig, client: openai.AsyncOpenAI) -> None:
        self.config = config
        self.client = client
        self._one_at_a_time = asyncio.Semaphore(1)

    def options(self, request: ImageRequest) -> dict[str, Any]:
        """What reaches the wire: model, size, n, and quality / style / formats where set."""
        config = self.config
        options: dict[str, Any] = {
            "model": config.model,
            "size": request.size or config.size,
            "n": request.n or config.n,
        }
        for key in ("quality", "style"):
            value = getattr(request, key) or getattr(config, key)
            if value is not None:
                options[key] = value
        if config.response_format is not None:
            options["response_format"] = config.response_format
        if config.output_format is not None:
            options["output_format"] = config.output_format
        return options

    async def generate(self, request: ImageRequest) -> list[dict[str, Any]]:
        """The images, each {"url" or "b64_json", "revised_prompt" when returned}."""
        async with self._one_at_a_time:
            result = await self.client.images.generate(prompt=request.prompt, **self.options(request))
        images = []
        for item in result.data or []:
            image = {
                key: getattr(item, key) for key in ("url", "b64_json", "revised_prompt") if getattr(item, key, None)
            }
            images.append(image)
        return images


class ImagePublisher:
    """Generates and publishes images; used by the MQTT topic and by the agent tool."""

    def __init__(self, maker: ImageMaker, root: str, publish: Callable[..., object]) -> None:
        self.maker = maker
        self.root = root
        self.publish = publish

    async def run(self, request: ImageRequest) -> dict[str, Any]:
        """Generate, then publish on `<root>/image` (and the entity's topic); return the message."""
        images = await self.maker.generate(request)
        if not images:
            raise RuntimeError("the images endpoint returned no image")
        message: dict[str, Any] = {"id": request.id, "prompt": request.prompt, **images[0]}
        if len(images) > 1:
            message["images"] = images
        self.publish(f"{self.root}/image", json.dumps(message))
        first = images[0]
        if "url" in first:
            self.publish(f"{self.root}/image/url", first["url"], retain=True)
        picture = first.get("b64_json")
        if picture is None and "url" in first:
            try:
                picture = base64.b64encode(await fetch_image(first["url"])).decode("ascii")
            except RuntimeError as error:
                raise RuntimeError(f"the picture was made but not shown: {error}") from None
        if picture is not None:
            self.publish(f"{self.root}/image/b64", picture, retain=True)
        return message

    def tool(self) -> Tool:
        """`generate_image`: lets the agent show a picture on the dashboard."""

        async def call(args: dict[str, Any]) -> ToolOutcome:
            prompt = args.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                return ToolOutcome(json.dumps({"error": "prompt must be a non-empty string"}), [])
            try:
                message = await self.run(ImageRequest(prompt.strip()[:MAX_PROMPT_CHARS], new_id()))
            except openai.APIError as error:
                return ToolOutcome(json.dumps({"error": f"image generation failed: {error}"}), [])
            except RuntimeError as error:
                return ToolOutcome(json.dumps({"error": str(error)}), [])
            revised = message.get("revised_prompt")
            result = {
                "result": "the picture is shown on the dashboard",
                **({"revised_prompt": revised} if revised else {}),
            }
            return ToolOutcome(json.dumps(result), [])

        parameters = {
            "type": "object",
            "properties": {"prompt": {"type": "string", "description": "what the picture should show"}},
            "required": ["prompt"],
        }
        return Tool("generate_image", "Create a picture and show it on the home's dashboard.", parameters, call)
