"""Image, PDF and audio inputs through the pool, from files served on loopback.

The standard suite's media tests download their fixtures from the internet; these send the
same content-block formats with small files generated here and served by a local HTTP
server (for the image URL form, which langchain-google-genai downloads itself). The emulator
counts 258 tokens for each media part it receives, so the usage shows every part arrived.
"""

from __future__ import annotations

import base64
import io
import struct
import threading
import wave
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import pytest
from langchain_core.messages import HumanMessage

from langchain_gemini_pool import ChatGeminiPool
from langchain_gemini_pool.testing import FakeGeminiServer

Emulator = Callable[..., FakeGeminiServer]
MakePool = Callable[..., ChatGeminiPool]
MEDIA_TOKENS = 258


def png() -> bytes:
    """A 2x2 RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def pdf() -> bytes:
    """A one-page PDF."""
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 72 72]>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )


def wav() -> bytes:
    """A tenth of a second of silence, 8 kHz mono."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 800)
    return out.getvalue()


FILES = {"/image.png": ("image/png", png()), "/doc.pdf": ("application/pdf", pdf())}


@pytest.fixture(scope="module")
def media_url() -> Iterator[str]:
    """A loopback HTTP server serving the generated files."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in FILES:
                self.send_error(404)
                return
            kind, data = FILES[self.path]
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def media_parts(pool: ChatGeminiPool, blocks: list[dict[str, Any]]) -> int:
    """Input tokens of a prompt with ``blocks``, minus those of the same text alone."""
    text = {"type": "text", "text": "Describe this."}
    with_media = pool.invoke([HumanMessage(content=[text, *blocks])])
    alone = pool.invoke([HumanMessage(content=[text])])
    assert with_media.usage_metadata is not None and alone.usage_metadata is not None
    assert with_media.text.startswith("Echo: Describe this")
    return with_media.usage_metadata["input_tokens"] - alone.usage_metadata["input_tokens"]


def test_image_inputs_in_every_form(
    emulator: Emulator, make_pool: MakePool, media_url: str
) -> None:
    pool = make_pool(emulator())
    data = b64(png())
    forms: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
        {"type": "image", "base64": data, "mime_type": "image/png"},
        {"type": "image", "url": f"{media_url}/image.png"},  # downloaded by the SDK's wrapper
    ]
    for form in forms:
        assert media_parts(pool, [form]) == MEDIA_TOKENS, form["type"]
    assert media_parts(pool, forms) == 3 * MEDIA_TOKENS


def test_pdf_and_audio_inputs(emulator: Emulator, make_pool: MakePool, media_url: str) -> None:
    pool = make_pool(emulator())
    with httpx2.Client() as http:
        document = http.get(f"{media_url}/doc.pdf").content
    assert document == pdf()
    blocks: list[dict[str, Any]] = [
        {"type": "file", "base64": b64(document), "mime_type": "application/pdf"},
        {
            "type": "file",
            "file": {
                "filename": "doc.pdf",
                "file_data": f"data:application/pdf;base64,{b64(document)}",
            },
        },
        {"type": "audio", "mime_type": "audio/wav", "base64": b64(wav())},
        {"type": "input_audio", "input_audio": {"data": b64(wav()), "format": "wav"}},
    ]
    for block in blocks:
        assert media_parts(pool, [block]) == MEDIA_TOKENS, block["type"]


def test_the_emulator_takes_inline_and_file_data_parts(emulator: Emulator) -> None:
    server = emulator()
    parts = [
        {"text": "Describe these."},
        {"inlineData": {"mimeType": "image/png", "data": b64(png())}},
        {"fileData": {"mimeType": "application/pdf", "fileUri": "https://example.invalid/doc"}},
    ]
    with httpx2.Client(base_url=server.base_url) as http:
        answer = http.post(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            headers={"x-goog-api-key": "fake-key-media"},
            json={"contents": [{"role": "user", "parts": parts}]},
        )
        text_only = http.post(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            headers={"x-goog-api-key": "fake-key-media"},
            json={"contents": [{"role": "user", "parts": parts[:1]}]},
        )
    assert answer.status_code == 200, answer.text
    used = answer.json()["usageMetadata"]["promptTokenCount"]
    assert used - text_only.json()["usageMetadata"]["promptTokenCount"] == 2 * MEDIA_TOKENS
