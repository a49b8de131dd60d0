"""``python -m langchain_gemini_pool.testing``: run the Gemini emulator until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from collections.abc import Sequence

from langchain_gemini_pool.testing import FakeGeminiServer, Faults, Quota


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m langchain_gemini_pool.testing",
        description="A local emulator of the Gemini Developer API (any key is accepted "
        "unless --key is given).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--key", action="append", help="accept only this key (repeatable)")
    parser.add_argument("--rpm", type=int, help="requests per window per project and model")
    parser.add_argument("--tpm", type=int, help="input tokens per window per project and model")
    parser.add_argument("--rpd", type=int, help="requests per Pacific day per project and model")
    parser.add_argument("--window", type=float, default=60.0, help="window length in seconds")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of 500s")
    parser.add_argument("--unavailable-rate", type=float, default=0.0, help="share of 503s")
    parser.add_argument("--reset-rate", type=float, default=0.0, help="share of dropped sockets")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quota = None
    if args.rpm is not None or args.tpm is not None or args.rpd is not None:
        quota = Quota(rpm=args.rpm, tpm=args.tpm, rpd=args.rpd)
    faults = Faults(
        error_rate=args.error_rate,
        unavailable_rate=args.unavailable_rate,
        reset_rate=args.reset_rate,
        latency_s=args.latency,
        seed=args.seed,
    )
    server = FakeGeminiServer(
        keys=args.key,
        quotas=quota,
        faults=faults,
        window_s=args.window,
        host=args.host,
        port=args.port,
        seed=args.seed,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with server:
        print(f"Gemini emulator serving at {server.base_url} (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    print("Gemini emulator stopped.", flush=True)


if __name__ == "__main__":
    main()
