"""Text-to-image generation for the image arena: an OpenAI-compatible images endpoint or a local diffusers pipeline.

Both answer `generate(prompt, seed) -> bytes` (an encoded image, PNG for the pipeline; whatever the endpoint
sends for it, validated later by `annotations.images.image_decode`). Pure: no Django; httpx only for the
endpoint, and diffusers/torch imported inside `DiffusersImages` (the optional `diffusers` extra).
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import httpx

from workers.ml.errors import BackendError, PermanentBackendError, TransientBackendError

MAX_IMAGE_RESPONSE_BYTES = 64 * 1024 * 1024  # a b64_json reply larger than this is refused before decoding


class OpenAIImages:
    """POST {base_url}/images/generations with `response_format: b64_json`, one image per call."""

    def __init__(
        self, *, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 60.0, size: str = ""
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.size = size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_s, pool=None))

    def __repr__(self) -> str:
        return f"OpenAIImages({self.base_url!r}, {self.model!r})"  # never the key

    def close(self) -> None:
        self._client.close()

    def generate(self, prompt: str, seed: int) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "n": 1,
            "response_format": "b64_json",
            "seed": seed,
        }
        if self.size:
            body["size"] = self.size
        url = f"{self.base_url}/images/generations"
        try:
            reply = self._client.post(url, json=body)
        except httpx.TimeoutException as exc:
            raise TransientBackendError(f"{url}: timed out: {exc}") from exc
        except httpx.TransportError as exc:
            raise TransientBackendError(f"{url}: cannot connect: {exc}") from exc
        if reply.status_code == 429 or reply.status_code >= 500:
            raise TransientBackendError(f"{url} answered HTTP {reply.status_code}", status_code=reply.status_code)
        if reply.status_code >= 400:
            raise PermanentBackendError(
                f"{url} answered HTTP {reply.status_code}: {reply.text[:300]}", status_code=reply.status_code
            )
        if len(reply.content) > MAX_IMAGE_RESPONSE_BYTES:
            raise PermanentBackendError(f"{url}: the reply is over {MAX_IMAGE_RESPONSE_BYTES} bytes")
        try:
            encoded = reply.json()["data"][0]["b64_json"]
            return base64.b64decode(encoded, validate=True)
        except (ValueError, KeyError, IndexError, TypeError, binascii.Error) as exc:
            raise PermanentBackendError(f"{url}: the reply holds no data[0].b64_json image ({exc})") from exc


class DiffusersImages:
    """A local diffusers pipeline folder (`DiffusionPipeline.from_pretrained`), on the GPU when there is one."""

    def __init__(self, path: str, *, steps: int = 25, dtype: str = "auto") -> None:
        try:
            import torch
            from diffusers import DiffusionPipeline
        except ImportError as exc:  # the optional extra is not installed
            raise PermanentBackendError(
                "the diffusers backend needs the optional extra: pip install 'prefarena[diffusers]'"
            ) from exc
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = torch.float16 if (dtype == "auto" and self.device == "cuda") else torch.float32
        if dtype == "bfloat16":
            torch_dtype = torch.bfloat16
        self.pipeline = DiffusionPipeline.from_pretrained(path, dtype=torch_dtype).to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)
        self.steps = steps

    def close(self) -> None:
        """Nothing to release per call: the pipeline stays in the worker's model cache."""

    def generate(self, prompt: str, seed: int) -> bytes:
        generator = self.torch.Generator(device="cpu").manual_seed(seed)
        try:
            with self.torch.inference_mode():
                result = self.pipeline(prompt, num_inference_steps=self.steps, generator=generator)
        except Exception as exc:
            raise BackendError(f"the pipeline failed: {type(exc).__name__}: {exc}") from exc
        image = result.images[0]
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
