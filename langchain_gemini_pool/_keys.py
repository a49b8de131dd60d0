"""API keys: loading from the environment and ``.env``, normalising, checking, masking.

A key's text is read here and handed to the SDK client of its member; everywhere else
(logs, reprs, errors, status tables, cache entries, the ledger) it is known only by its
masked form, ``…`` plus its last four characters.

A Gemini API key is printable ASCII without whitespace (Google's keys are letters, digits,
``-`` and ``_``). Anything else is refused when the key is loaded or added, with a
``ValueError`` that names where the key came from and shows only its masked form: such a key
cannot be sent as an HTTP header, and the HTTP client's own error would print it in full.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
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
_KEY_VARIABLE = re.compile(r"^(GEMINI_API_KEY(_\d+|S)?|GOOGLE_API_KEY)$")
_LIST_SEPARATORS = re.compile(r"[,\r\n]+")
_API_KEYS_SHAPE = "a key (str or SecretStr), a list of keys, or a mapping project name -> keys"


def mask_key(key: KeyLike) -> str:
    """The masked form of a key: ``…`` plus its last four characters.

    Safe to log, print and store. Keys of four characters or fewer mask to ``…`` alone.
    """
    text = key.get_secret_value() if isinstance(key, SecretStr) else key
    text = text.strip()
    return "…" + text[-4:] if len(text) > 4 else "…"


def _shown(key: str) -> str:
    """The masked form, with anything unprintable in its last four characters as ``?``."""
    return "…" + "".join(c if "!" <= c <= "~" else "?" for c in mask_key(key)[1:])


def _clean(value: str) -> str:
    """Strip whitespace and one pair of matching surrounding quotes."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1].strip()
    return value


def _describe(char: str) -> str:
    names = {" ": "a space", "\n": "a line break", "\r": "a carriage return", "\t": "a tab"}
    if char in names:
        return names[char]
    if char == "\x00":
        return "a NUL character"
    if char == "#":
        return "a '#' (a comment marker; no Gemini API key contains one)"
    if ord(char) < 32 or ord(char) == 127:
        return f"a control character (U+{ord(char):04X})"
    if ord(char) > 127:
        return f"a non-ASCII character (U+{ord(char):04X})"
    return f"the character {char!r}"  # pragma: no cover - every printable ASCII is allowed


_ENV_HINT = (
    "Put one key per variable (GEMINI_API_KEY_1, GEMINI_API_KEY_2, …), or several in "
    "GEMINI_API_KEYS separated by commas or line breaks."
)
_LIST_HINT = "Pass one key per list item, or a string of keys separated by commas or line breaks."


def check_key(key: str, where: str) -> str:
    """Return ``key`` if it can be a Gemini API key, else raise a ``ValueError``.

    A key is printable ASCII (``!`` to ``~``) without whitespace and without ``#``. The error
    names ``where`` the key came from and shows the key masked, never its text.

    Raises:
        ValueError: If the key holds whitespace, a control, non-ASCII or ``#`` character.
    """
    for position, char in enumerate(key, start=1):
        if not "!" <= char <= "~" or char == "#":
            raise ValueError(
                f"The API key {_shown(key)} in {where} contains {_describe(char)} at "
                f"character {position} of {len(key)}. A Gemini API key is printable ASCII "
                "without spaces, line breaks or other control characters: check for two keys "
                "run together, a stray quote or comment, or text pasted with the key. "
                + (_ENV_HINT if where.startswith(("GEMINI", "GOOGLE")) else _LIST_HINT)
            )
    return key


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

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError(
            "A KeyEntry holds an API key and cannot be pickled or copied deeply; "
            "pass the keys themselves."
        )


def _uncomment(name: str, value: str) -> str:
    """``value`` without a ``#…`` tail, with a warning: ``KEY=abc#note`` in a ``.env`` file
    is not a comment (dotenv wants a space before ``#``), and ``#`` is never part of a key."""
    if "#" not in value:
        return value
    logger.warning(
        "%s has a '#' in its value; the text from the '#' on is ignored as a comment (a "
        "Gemini API key never contains '#'). In a .env file put a space before a '#' comment, "
        "or the comment on a line of its own.",
        name,
    )
    return "\n".join(line.split("#", 1)[0] for line in value.splitlines())


def _env_candidates(env: Mapping[str, str | None]) -> list[tuple[str, str]]:
    """``(where, raw key)`` pairs from ``env``, in the documented order."""
    values: list[tuple[str, str]] = []
    single = env.get("GEMINI_API_KEY")
    if single:
        values.append(("GEMINI_API_KEY", _uncomment("GEMINI_API_KEY", single)))
    numbered = sorted(
        (int(m.group(1)), name) for name in env if (m := _NUMBERED.match(name)) is not None
    )
    for _, name in numbered:
        if value := env.get(name):
            values.append((name, _uncomment(name, value)))
    if listed := env.get("GEMINI_API_KEYS"):
        items = _LIST_SEPARATORS.split(_clean(_uncomment("GEMINI_API_KEYS", listed)))
        values.extend((f"GEMINI_API_KEYS (item {n})", v) for n, v in enumerate(items, start=1))
    if not any(_clean(v) for _, v in values) and (google := env.get("GOOGLE_API_KEY")):
        values.append(("GOOGLE_API_KEY", _uncomment("GOOGLE_API_KEY", google)))
    return values


def _find_env_file(env_file: str | os.PathLike[str] | None) -> Path | None:
    if env_file is None:
        found = find_dotenv(usecwd=True)
        return Path(found) if found else None
    path = Path(env_file)
    if not path.is_file():
        raise ValueError(
            f"The env_file {str(path)!r} does not exist or is not a file. "
            "Pass the path of a .env file, or leave env_file unset to search upward "
            "from the working directory."
        )
    return path


def _parse_env_file(path: Path) -> dict[str, str | None]:
    """The file's assignments; a clear ``ValueError`` (never its text) when it cannot be read.

    Errors are raised outside the ``except`` so that no ``__context__`` (a decode error holds
    the file's bytes, keys included) travels with them.
    """
    problem: str | None = None
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            bindings = list(parse_stream(stream))
        values = dotenv_values(path, encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        problem = f"it is not UTF-8 text (byte 0x{exc.object[exc.start]:02X} on line {line})"
    except OSError as exc:
        problem = f"{type(exc).__name__}: {exc.strerror or 'cannot read it'}"
    if problem is not None:
        raise ValueError(
            f"Could not read the .env file {str(path)!r}: {problem}. Save it as UTF-8 text "
            "of NAME=value lines."
        )
    broken = [b.original.line for b in bindings if b.error]
    if broken:
        # Name the lines, never their text: a broken line may hold a key.
        lines = ", ".join(str(n) for n in broken)
        raise ValueError(
            f"The .env file {str(path)!r} has lines that are not NAME=value "
            f"assignments (line {lines}); fix or remove them (a value with spaces or "
            "quotes must be quoted as a whole, and every quote closed)."
        )
    bare = [b.original.line for b in bindings if b.key and b.value is None]
    if bare:
        # A line with no "=" (dotenv reads it as a name without a value): usually the second
        # line of an unquoted multi-line GEMINI_API_KEYS, whose key would be lost silently.
        logger.warning(
            "The .env file %r has line(s) %s with no '='; they are ignored. If they continue a "
            'list of keys, quote the whole list (GEMINI_API_KEYS="key1<line break>key2") or '
            "put the keys on one line separated by commas.",
            str(path),
            ", ".join(str(n) for n in bare),
        )
    seen = Counter(b.key for b in bindings if b.key and _KEY_VARIABLE.match(b.key))
    for name, count in seen.items():
        if count > 1:
            lines = ", ".join(str(b.original.line) for b in bindings if b.key == name)
            logger.warning(
                "The .env file %r sets %s more than once (lines %s); the last one is used.",
                str(path),
                name,
                lines,
            )
    return dict(values)


def _read_env(env_file: str | os.PathLike[str] | None) -> dict[str, str | None]:
    """``.env`` entries overlaid by the real environment (which wins); never writes os.environ."""
    path = _find_env_file(env_file)
    merged: dict[str, str | None] = {}
    if path is not None:
        merged.update(_parse_env_file(path))
    merged.update(os.environ)
    return merged


def _checked(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """Clean and check each ``(where, raw)``, keep the first of each key, dropping empties;
    warn (masked) about duplicates."""
    seen: set[str] = set()
    kept: list[str] = []
    duplicates: list[str] = []
    for where, raw in pairs:
        key = _clean(raw)
        if not key:
            continue
        check_key(key, where)
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
    (gaps allowed, no upper bound), then ``GEMINI_API_KEYS`` (separated by commas or line
    breaks), and ``GOOGLE_API_KEY`` only if none of those is set. Real environment variables
    win over ``.env`` entries of the same name; ``os.environ`` is never modified. Whitespace
    and quotes are stripped, empty values ignored and duplicates dropped with a warning.

    Oddities of ``.env`` files: a UTF-8 byte-order mark, CRLF line ends, ``export NAME=`` and
    quoting are read as python-dotenv reads them. ``NAME=key#note`` (no space before ``#``)
    loads ``key`` with a WARNING (a ``#`` is never part of a key); a key variable set twice
    is a WARNING (the last one wins); a line without ``=`` (such as the second line of an
    unquoted multi-line ``GEMINI_API_KEYS``) is a WARNING and ignored.

    Args:
        env_file: A ``.env`` file to read. Defaults to the nearest ``.env`` found upward from
            the working directory, if any.

    Returns:
        The keys in order, as ``SecretStr``.

    Raises:
        ValueError: If no key is found (naming the variables looked at); if a key is not
            printable ASCII without whitespace (naming the variable, key masked); or if the
            ``.env`` file is missing, unreadable, not UTF-8, or has lines that are not
            ``NAME=value``.
    """
    keys = _checked(_env_candidates(_read_env(env_file)))
    if not keys:
        where = f" or in {os.fspath(env_file)!r}" if env_file is not None else " or in a .env file"
        raise ValueError(
            f"No Gemini API key found in the environment{where}. Looked at: {_LOOKED_AT}. "
            "Set GEMINI_API_KEY (or GEMINI_API_KEY_1, GEMINI_API_KEY_2, …), or pass api_keys=."
        )
    return [SecretStr(k) for k in keys]


def _items(keys: object, where: str) -> list[tuple[str, str]]:
    """``(where, text)`` for one value of ``api_keys``: a key, or an iterable of keys."""
    if isinstance(keys, str):
        parts = _LIST_SEPARATORS.split(_clean(keys))
        if len(parts) == 1:
            return [(where, keys)]
        return [(f"{where} (item {n})", p) for n, p in enumerate(parts, start=1)]
    if isinstance(keys, SecretStr):
        return [(where, keys.get_secret_value())]
    if isinstance(keys, (bytes, bytearray)) or not isinstance(keys, Iterable):
        raise TypeError(f"{where} must be {_API_KEYS_SHAPE}; got {type(keys).__name__}.")
    return [(f"{where}[{n}]", _text(k)) for n, k in enumerate(keys)]


def normalize_keys(api_keys: ApiKeys, source: str = "api_keys") -> list[KeyEntry]:
    """Turn a list or a project mapping into ``KeyEntry`` objects.

    A single string may list several keys separated by commas or line breaks. In a plain list
    each key is its own project, named ``project-<fingerprint>`` (with a ``-2``, ``-3`` …
    suffix when distinct keys share a fingerprint). Duplicates (across projects too) are
    dropped with a warning.

    Args:
        api_keys: The keys.
        source: How errors name the argument (``api_keys``, ``add_keys(keys)``).

    Raises:
        TypeError: If ``api_keys`` or a key in it has the wrong type.
        ValueError: If a key is not printable ASCII without whitespace (its position named,
            the key masked), a project name is empty, or no usable key remains.
    """
    pairs: list[tuple[str | None, str, str]] = []
    if isinstance(api_keys, Mapping):
        for project, keys in api_keys.items():
            if not isinstance(project, str) or not project.strip():
                raise ValueError(
                    f"Project names in {source} must be non-empty strings; "
                    f"got a {type(project).__name__} of {len(str(project))} characters."
                )
            where = f"{source}[{project.strip()!r}]"
            pairs.extend((project.strip(), w, t) for w, t in _items(keys, where))
    else:
        pairs.extend((None, w, t) for w, t in _items(api_keys, source))

    kept = set(_checked((w, t) for _, w, t in pairs))
    entries: list[KeyEntry] = []
    named: dict[str, int] = {}
    for project, _, raw in pairs:
        key = _clean(raw)
        if key not in kept:
            continue
        kept.discard(key)
        entries.append(KeyEntry(SecretStr(key), project or _own_project(key, named)))
    if not entries:
        raise ValueError(
            f"{source} holds no usable key (all were empty). Pass at least one Gemini API key, "
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
