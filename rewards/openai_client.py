"""A small client for OpenAI-compatible chat-completions endpoints (text and images).

Used by the VLM keypoint proposal (``rewards/vlm.py``) and meant for the LLM reward-code
work too. It speaks ``POST {base_url}/chat/completions`` with the standard JSON body, so it
works with OpenAI itself and with local servers that copy the API (vLLM, llama.cpp,
Ollama's /v1). Only the standard library is used (``urllib``): no extra dependency.

* The API key is read from the environment variable *named* in the config
  (``api_key_env``), never stored in configs or logs; ``api_key_env: null`` sends no key
  (local servers).
* ``n`` samples per request; when a server returns fewer choices than asked (many local
  servers ignore ``n``), the client asks again for the rest.
* Failures that may pass (connection errors, timeouts, HTTP 408/409/429/5xx) are retried
  ``retries`` times with exponential backoff ``backoff_s * 2**attempt`` (capped at
  ``max_backoff_s``, or the server's Retry-After when it gives one within the cap); other
  HTTP errors (400, 401, 404...) fail at once. Every call is bounded: at most
  ``(retries + 1) * (timeout_s + max_backoff_s)`` seconds per request.
* Images go in ``image_url`` content parts as ``data:image/png;base64,...`` URLs
  (:func:`image_part` encodes uint8 arrays to PNG with zlib, no imaging library needed).
"""

from __future__ import annotations

import base64
import json
import os
import struct
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class LLMError(RuntimeError):
    """A chat request that failed for good (after retries, or with a non-retryable status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ChatResult:
    """The texts of the returned choices, plus the raw responses (usage, model, ids) for the record."""

    texts: list[str]
    raw: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""


@dataclass
class ChatClient:
    """OpenAI-compatible chat client; the fields are the config knobs (see configs/reward/keypoints.yaml ``vlm``)."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o"
    api_key_env: str | None = "OPENAI_API_KEY"
    temperature: float = 0.0
    n: int = 1
    max_tokens: int | None = 1024
    timeout_s: float = 60.0
    retries: int = 2
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    extra_body: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"response_format": {"type": "json_object"}}

    def __post_init__(self) -> None:
        if not str(self.base_url).startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if self.n < 1 or self.retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0:
            raise ValueError(f"bad client settings: n={self.n} (>= 1), retries={self.retries} (>= 0), "
                             f"timeout_s={self.timeout_s} (> 0), backoff_s={self.backoff_s} (>= 0)")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str = "vlm") -> ChatClient:
        """From a config mapping; unknown keys fail with the list of allowed ones."""
        allowed = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(cfg) - allowed)
        if unknown:
            raise ValueError(f"{where} has unknown keys {unknown}; allowed: {sorted(allowed)}")
        return cls(**dict(cfg))

    # ---- request ------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise LLMError(f"the API key variable {self.api_key_env!r} is not set (config api_key_env; "
                               "set it to null for servers that need no key)")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def chat(self, messages: Sequence[Mapping[str, Any]], *, n: int | None = None,
             temperature: float | None = None, **extra: Any) -> ChatResult:
        """Send ``messages``; returns ``n`` (default ``self.n``) choice texts."""
        want = self.n if n is None else int(n)
        t0 = time.monotonic()
        texts: list[str] = []
        raws: list[dict[str, Any]] = []
        for _ in range(want):  # at most one request per missing sample
            body = {"model": self.model, "messages": list(messages),
                    "temperature": self.temperature if temperature is None else float(temperature),
                    **({"n": want - len(texts)} if want - len(texts) > 1 else {}),
                    **({"max_tokens": self.max_tokens} if self.max_tokens else {}),
                    **dict(self.extra_body), **extra}
            raw = self._post_with_retries("/chat/completions", body)
            raws.append(raw)
            choices = raw.get("choices")
            if not isinstance(choices, list) or not choices:
                raise LLMError(f"response from {self.base_url} has no choices: {_short(raw)}")
            for ch in choices:
                content = (ch.get("message") or {}).get("content") if isinstance(ch, Mapping) else None
                if isinstance(content, list):  # some servers return content parts
                    content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
                texts.append(content if isinstance(content, str) else "")
            if len(texts) >= want:
                break
        return ChatResult(texts[:want], raws, time.monotonic() - t0)

    def _post_with_retries(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        url = self.base_url.rstrip("/") + path
        data = json.dumps(body).encode()
        headers = self._headers()
        last, status = "", None
        for attempt in range(self.retries + 1):
            retry_after: float | None = None
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    payload = resp.read()
                try:
                    out = json.loads(payload)
                except json.JSONDecodeError as e:
                    raise LLMError(f"{url} answered with invalid JSON: {payload[:200]!r}") from e
                if not isinstance(out, dict):
                    raise LLMError(f"{url} answered with JSON that is not an object: {_short(out)}")
                return out
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode(errors="replace")
                last = f"HTTP {e.code} from {url}: {detail}"
                if e.code not in RETRY_STATUS:
                    raise LLMError(last, status=e.code) from e
                ra = e.headers.get("Retry-After") if e.headers else None
                if ra is not None:
                    try:
                        retry_after = float(ra)
                    except ValueError:
                        retry_after = None
                status = e.code
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                last = f"no answer from {url} within {self.timeout_s:g} s ({reason})"
                status = None
            if attempt < self.retries:
                wait = min(self.backoff_s * 2**attempt, self.max_backoff_s)
                if retry_after is not None:
                    wait = min(max(wait, retry_after), self.max_backoff_s)
                time.sleep(wait)
        raise LLMError(f"chat request failed after {self.retries + 1} attempts: {last}", status=status)


# ---------------------------------------------------------------------------
# messages


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def image_part(image: np.ndarray | bytes, detail: str | None = None) -> dict[str, Any]:
    """An ``image_url`` content part from an RGB uint8 array (encoded as PNG) or PNG/JPEG bytes."""
    if isinstance(image, bytes | bytearray):
        blob = bytes(image)
        mime = "image/jpeg" if blob[:3] == b"\xff\xd8\xff" else "image/png"
    else:
        blob, mime = encode_png(np.asarray(image)), "image/png"
    url = {"url": f"data:{mime};base64,{base64.b64encode(blob).decode()}"}
    if detail:
        url["detail"] = detail
    return {"type": "image_url", "image_url": url}


def user_message(text: str, images: Sequence[np.ndarray | bytes] = ()) -> dict[str, Any]:
    """A user turn with the text first, then the images."""
    if not images:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [text_part(text), *(image_part(im) for im in images)]}


def system_message(text: str) -> dict[str, Any]:
    return {"role": "system", "content": text}


def encode_png(image: np.ndarray) -> bytes:
    """Minimal PNG encoder (8-bit greyscale ``(H, W)``, RGB or RGBA ``(H, W, 3|4)``), stdlib zlib only."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 pixels, got {img.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ValueError(f"encode_png needs (H, W), (H, W, 3) or (H, W, 4), got {img.shape}")
    h, w, c = img.shape
    color_type = {1: 0, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))  # filter 0 per scanline

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def _short(obj: Any, n: int = 300) -> str:
    s = json.dumps(obj) if not isinstance(obj, str) else obj
    return s if len(s) <= n else s[:n] + "..."


__all__ = ["ChatClient", "ChatResult", "LLMError", "encode_png", "image_part", "system_message", "text_part",
           "user_message"]
