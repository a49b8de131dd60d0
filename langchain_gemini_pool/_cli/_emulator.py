"""``gemini-pool emulator`` and ``python -m langchain_gemini_pool.testing``: one set of options.

The options are declared here (argparse only, nothing heavy) so that both commands print the
same ``--help``; :func:`serve` builds a ``FakeGeminiServer`` from them and runs it until Ctrl-C
or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from typing import Any, TextIO

from langchain_gemini_pool._cli._output import USAGE, CliError, Context

BAD_KEY_KINDS = ("invalid", "expired", "leaked", "service_disabled", "suspended", "denied")


def add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the emulator's options on ``parser``."""
    where = parser.add_argument_group("where it listens")
    where.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default %(default)s)"
    )
    where.add_argument(
        "--port",
        type=int,
        default=8765,
        help="port to bind; 0 picks a free one (default %(default)s)",
    )
    keys = parser.add_argument_group("keys and projects (default: any key, each its own project)")
    keys.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY",
        help="accept only this key, its own project (repeatable); others get 400 API_KEY_INVALID",
    )
    keys.add_argument(
        "--project",
        action="append",
        default=[],
        metavar="NAME=KEY[,KEY...]",
        help="keys that share one project's quota (repeatable)",
    )
    keys.add_argument(
        "--bad-key",
        action="append",
        default=[],
        metavar="KEY=KIND",
        help=f"answer this key with Google's error body for KIND: {', '.join(BAD_KEY_KINDS)}",
    )
    quota = parser.add_argument_group("quotas, per project and model (default: unlimited)")
    quota.add_argument("--rpm", type=int, help="requests per window")
    quota.add_argument("--tpm", type=int, help="input tokens per window")
    quota.add_argument("--rpd", type=int, help="requests per Pacific calendar day")
    quota.add_argument(
        "--window",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="length of the 'minute' window; smaller scales time down (default %(default)s)",
    )
    quota.add_argument(
        "--unknown-model",
        action="append",
        default=[],
        metavar="MODEL",
        help="answer this model with 404 NOT_FOUND (repeatable)",
    )
    quota.add_argument(
        "--zero-quota-model",
        action="append",
        default=[],
        metavar="MODEL",
        help="a model with no free tier: every request gets a 429 with quota 0 (repeatable)",
    )
    faults = parser.add_argument_group("faults and latency (seeded, so runs repeat)")
    faults.add_argument("--error-rate", type=float, default=0.0, help="share of 500 INTERNAL")
    faults.add_argument(
        "--unavailable-rate", type=float, default=0.0, help="share of 503 UNAVAILABLE (overloaded)"
    )
    faults.add_argument(
        "--reset-rate", type=float, default=0.0, help="share of dropped connections"
    )
    faults.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="added to every generate request",
    )
    faults.add_argument(
        "--jitter", type=float, default=0.0, metavar="SECONDS", help="extra uniform random wait"
    )
    faults.add_argument(
        "--stream-cut-after",
        type=int,
        default=None,
        metavar="N",
        help="every stream sends N chunks, then an error event",
    )
    faults.add_argument("--seed", type=int, default=0, help="seed of faults and response ids")


def _usage_error(message: str) -> CliError:
    return CliError(message, USAGE)


def _pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise _usage_error(
                f"{option} takes NAME=VALUE (one of them has no '=' or an empty side)"
            )
        out.append((name.strip(), rest.strip()))
    return out


def build_server(args: argparse.Namespace) -> Any:
    """The ``FakeGeminiServer`` the options describe (not started).

    Raises:
        CliError: With the usage exit status, for a value the emulator cannot take.
    """
    from langchain_gemini_pool.testing import FakeGeminiServer, Faults, Quota

    keys: Any = None
    projects = _pairs(args.project, "--project")
    if projects:
        keys = {name: [k for k in rest.split(",") if k.strip()] for name, rest in projects}
        for key in args.key:
            keys[f"project-{len(keys) + 1}"] = [key]
    elif args.key:
        keys = list(args.key)
    bad = dict(_pairs(args.bad_key, "--bad-key"))
    for kind in bad.values():
        if kind not in BAD_KEY_KINDS:
            raise _usage_error(
                f"--bad-key KIND must be one of {', '.join(BAD_KEY_KINDS)}, not {kind!r}"
            )
    if not 0 <= args.port <= 65535:
        raise _usage_error(f"--port must be 0..65535, not {args.port}")
    if args.window <= 0:
        raise _usage_error("--window must be a positive number of seconds")
    try:
        quota = None
        if args.rpm is not None or args.tpm is not None or args.rpd is not None:
            quota = Quota(rpm=args.rpm, tpm=args.tpm, rpd=args.rpd)
        faults = Faults(
            error_rate=args.error_rate,
            unavailable_rate=args.unavailable_rate,
            reset_rate=args.reset_rate,
            latency_s=args.latency,
            jitter_s=args.jitter,
            stream_cut_after=args.stream_cut_after,
            seed=args.seed,
        )
        return FakeGeminiServer(
            keys=keys,
            quotas=quota,
            bad_keys=bad,
            unknown_models=args.unknown_model,
            zero_quota_models=args.zero_quota_model,
            faults=faults,
            window_s=args.window,
            host=args.host,
            port=args.port,
            seed=args.seed,
        )
    except (ValueError, TypeError) as exc:
        raise _usage_error(str(exc)) from None


def serve(
    server: Any, args: argparse.Namespace, out: TextIO, stop: threading.Event | None = None
) -> int:
    """Serve until Ctrl-C, SIGTERM or ``stop`` is set; returns the exit status."""
    done = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        server.start()
    except OSError as exc:
        raise CliError(
            f"The emulator cannot listen on {args.host}:{args.port} "
            f"({exc.strerror or exc}). Pick another --port (0 picks a free one)."
        ) from None
    try:
        print(
            f"Gemini emulator serving at {server.base_url} (Ctrl-C to stop)", file=out, flush=True
        )
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    finally:
        server.stop()
    print("Gemini emulator stopped.", file=out, flush=True)
    return 0


def run(args: argparse.Namespace, ctx: Context) -> int:
    """``gemini-pool emulator``."""
    return serve(build_server(args), args, ctx.out)
