"""API keys: loading from the environment and ``.env``, normalising, masking.

A key's text is read here and handed to the SDK client of its member; everywhere else
(logs, reprs, errors, status tables, cache entries, the ledger) it is known only by its
masked form, ``…`` plus its last four characters.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values, find_dotenv
from dotenv.parser import parse_stream
from pydantic import SecretStr

logger = logging.getLogger("langchain_gemini_pool")

KeyLike = str | SecretStr
"""One API key, as text or as a ``SecretStr``."""

ApiKeys = KeyLike | Iterable[KeyLike] | Mapping[str, KeyLike | Iterable[KeyLike]]
"""One key, a list of keys (each its own project), or a mapping project name -> keys."""

_NUMBERED = re.compile(r"^GEMINI_API_KEY_(\d+)$")
_LOOKED_AT = "GEMINI_API_KEY, GEMINI_API_KEY_1 … GEMINI_API_KEY_N, GEMINI_API_KEYS, GOOGLE_API_KEY"


def mask_key(key: KeyLike) -> str:
    """The masked form of a key: ``…`` plus its last four characters.

    Safe to log, print and store. Keys of four characters or fewer mask to ``…`` alone.
    """
    text = key.get_secret_value() if isinstance(key, SecretStr) else key
    text = text.strip()
    return "…" + text[-4:] if len(text) > 4 else "…"


def _clean(value: str) -> str:
    """Strip whitespace and one pair of matching surrounding quotes."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1].strip()
    return value


@dataclass(frozen=True)
class KeyEntry:
    """One normalised key and the project its quota belongs to."""

    secret: SecretStr
    project: str

    @property
    def fingerprint(self) -> str:
        return mask_key(self.secret)

    def __repr__(self) -> str:
        return f"KeyEntry({self.fingerprint!r}, project={self.project!r})"


def _env_candidates(env: Mapping[str, str | None]) -> list[str]:
    """The raw key values of ``env`` in the documented order."""
    values: list[str] = []
    single = env.get("GEMINI_API_KEY")
    if single:
        values.append(single)
    numbered = sorted(
        (int(m.group(1)), name) for name in env if (m := _NUMBERED.match(name)) is not None
    )
    for _, name in numbered:
        if value := env.get(name):
            values.append(value)
    if listed := env.get("GEMINI_API_KEYS"):
        values.extend(_clean(listed).split(","))
    if not any(_clean(v) for v in values) and (google := env.get("GOOGLE_API_KEY")):
        values.append(google)
    return values


def _read_env(env_file: str | os.PathLike[str] | None) -> dict[str, str | None]:
    """``.env`` entries overlaid by the real environment (which wins); never writes os.environ."""
    if env_file is None:
        found = find_dotenv(usecwd=True)
        path: Path | None = Path(found) if found else None
    else:
        path = Path(env_file)
        if not path.is_file():
            raise ValueError(
                f"The env_file {str(path)!r} does not exist or is not a file. "
                "Pass the path of a .env file, or leave env_file unset to search upward "
                "from the working directory."
            )
    merged: dict[str, str | None] = {}
    if path is not None:
        try:
            with path.open(encoding="utf-8") as stream:
                broken = [b.original.line for b in parse_stream(stream) if b.error]
            values = dotenv_values(path, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"Could not read the .env file {str(path)!r} ({type(exc).__name__}). "
                "Check that it is a readable UTF-8 text file of NAME=value lines."
            ) from None
        if broken:
            # Name the lines, never their text: a broken line may hold a key.
            lines = ", ".join(str(n) for n in broken)
            raise ValueError(
                f"The .env file {str(path)!r} has lines that are not NAME=value "
                f"assignments (line {lines}); fix or remove them (a value with spaces or "
                "quotes must be quoted as a whole, and every quote closed)."
            )
        merged.update(values)
    merged.update(os.environ)
    return merged


def _dedupe(values: Iterable[str]) -> list[str]:
    """Keep the first of each key, dropping empties; warn (masked) about duplicates."""
    seen: set[str] = set()
    kept: list[str] = []
    duplicates: list[str] = []
    for raw in values:
        key = _clean(raw)
        if not key:
            continue
        if key in seen:
            duplicates.append(mask_key(key))
            continue
        seen.add(key)
        kept.append(key)
    if duplicates:
        logger.warning(
            "Dropped %d duplicate Gemini API key(s): %s", len(duplicates), ", ".join(duplicates)
        )
    return kept


def load_api_keys(env_file: str | os.PathLike[str] | None = None) -> list[SecretStr]:
    """Load Gemini API keys from the environment and a ``.env`` file.

    Reads ``GEMINI_API_KEY``, then ``GEMINI_API_KEY_1`` … ``GEMINI_API_KEY_N`` in numeric order
    (gaps allowed, no upper bound), then ``GEMINI_API_KEYS`` (comma-separated), and
    ``GOOGLE_API_KEY`` only if none of those is set. Real environment variables win over ``.env``
    entries of the same name; ``os.environ`` is never modified. Whitespace and quotes are
    stripped, empty values ignored and duplicates dropped with a warning.

    Args:
        env_file: A ``.env`` file to read. Defaults to the nearest ``.env`` found upward from
            the working directory, if any.

    Returns:
        The keys in order, as ``SecretStr``.

    Raises:
        ValueError: If no key is found (naming the variables looked at), or if the ``.env``
            file is missing, unreadable, or has lines that are not ``NAME=value``.
    """
    keys = _dedupe(_env_candidates(_read_env(env_file)))
    if not keys:
        where = f" or in {os.fspath(env_file)!r}" if env_file is not None else " or in a .env file"
        raise ValueError(
            f"No Gemini API key found in the environment{where}. Looked at: {_LOOKED_AT}. "
            "Set GEMINI_API_KEY (or GEMINI_API_KEY_1, GEMINI_API_KEY_2, …), or pass api_keys=."
        )
    return [SecretStr(k) for k in keys]


def normalize_keys(api_keys: ApiKeys) -> list[KeyEntry]:
    """Turn a list or a project mapping into ``KeyEntry`` objects.

    In a plain list each key is its own project, named ``project-<fingerprint>`` (with a
    ``-2``, ``-3`` … suffix when distinct keys share a fingerprint). Duplicates
    (across projects too) are dropped with a warning; a key that is not text is an error.

    Raises:
        TypeError: If a key is neither ``str`` nor ``SecretStr``.
        ValueError: If no usable key remains.
    """
    pairs: list[tuple[str | None, str]] = []
    if isinstance(api_keys, (str, SecretStr)):
        api_keys = [api_keys]
    if isinstance(api_keys, Mapping):
        for project, keys in api_keys.items():
            if not isinstance(project, str) or not project.strip():
                raise ValueError("Project names in api_keys must be non-empty strings.")
            if isinstance(keys, (str, SecretStr)):
                keys = [keys]
            pairs.extend((project.strip(), _text(k)) for k in keys)
    else:
        pairs.extend((None, _text(k)) for k in api_keys)

    kept = set(_dedupe(text for _, text in pairs))
    entries: list[KeyEntry] = []
    named: dict[str, int] = {}
    for project, raw in pairs:
        key = _clean(raw)
        if key not in kept:
            continue
        kept.discard(key)
        entries.append(KeyEntry(SecretStr(key), project or _own_project(key, named)))
    if not entries:
        raise ValueError(
            "api_keys holds no usable key (all were empty). Pass at least one Gemini API key, "
            f"or leave api_keys unset to load them from the environment ({_LOOKED_AT})."
        )
    return entries


def _own_project(key: str, taken: dict[str, int]) -> str:
    """``project-<fingerprint>``, made unique: distinct keys may share their last four
    characters, and keys of one list must never share a project (and so a cooldown).

    ``taken`` counts the names given per fingerprint, so n keys sharing one cost O(n), not
    O(n²). A suffixed name is longer than any bare one, so the two kinds never collide.
    """
    base = f"project-{mask_key(key)}"
    n = taken[base] = taken.get(base, 0) + 1
    return base if n == 1 else f"{base}-{n}"


def _text(key: object) -> str:
    if isinstance(key, SecretStr):
        return key.get_secret_value()
    if isinstance(key, str):
        return key
    raise TypeError(f"An API key must be a str or a pydantic SecretStr, not {type(key).__name__}.")
