"""Keys: loading from the environment and ``.env``, normalising, masking.

Every test runs in its own empty working directory with every key variable removed from the
environment, so the only keys seen are the ones the test sets.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from langchain_gemini_pool import load_api_keys, mask_key
from langchain_gemini_pool._keys import KeyEntry, normalize_keys

K1 = "AIzaSyFAKE-first-key-000001"
K2 = "AIzaSyFAKE-second-key-00002"
K3 = "AIzaSyFAKE-third-key-000003"
K4 = "AIzaSyFAKE-fourth-key-00004"
G = "AIzaSyFAKE-google-key-00009"

_KEY_VAR = re.compile(r"^(GEMINI_API_KEY(_\d+|S)?|GOOGLE_API_KEY)$")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No key variables, and a working directory with no ``.env`` above it that we did not
    write (tmp_path sits under the system temp directory)."""
    for name in list(os.environ):
        if _KEY_VAR.match(name):
            monkeypatch.delenv(name)
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def texts(keys: list[SecretStr]) -> list[str]:
    return [k.get_secret_value() for k in keys]


def write_env(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- the order of variables ---------------------------------------------------------------------


def test_single_gemini_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", K1)
    keys = load_api_keys()
    assert texts(keys) == [K1]
    assert all(isinstance(k, SecretStr) for k in keys)


def test_order_is_single_then_numbered_numerically_then_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GEMINI_API_KEYS", f"{K4},{G}")
    monkeypatch.setenv("GEMINI_API_KEY_10", K3)
    monkeypatch.setenv("GEMINI_API_KEY_2", K2)
    monkeypatch.setenv("GEMINI_API_KEY", K1)
    monkeypatch.setenv("GEMINI_API_KEY_1", "AIzaSyFAKE-numbered-one-001")
    assert texts(load_api_keys()) == [
        K1,
        "AIzaSyFAKE-numbered-one-001",
        K2,
        K3,  # 10 after 2: numeric, not lexical
        K4,
        G,
    ]


def test_numbered_keys_have_no_cap_and_allow_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = {n: f"AIzaSyFAKE-numbered-{n:06d}" for n in (3, 7, 99, 100, 101, 250, 1000)}
    for n, key in wanted.items():
        monkeypatch.setenv(f"GEMINI_API_KEY_{n}", key)
    assert texts(load_api_keys()) == [wanted[n] for n in sorted(wanted)]


def test_names_that_only_look_numbered_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY_1", K1)
    monkeypatch.setenv("GEMINI_API_KEY_X", K2)
    monkeypatch.setenv("GEMINI_API_KEY_1_OLD", K3)
    monkeypatch.setenv("MY_GEMINI_API_KEY_2", K4)
    assert texts(load_api_keys()) == [K1]


def test_google_api_key_is_used_only_when_no_gemini_variable_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", G)
    assert texts(load_api_keys()) == [G]
    monkeypatch.setenv("GEMINI_API_KEY_5", K1)
    assert texts(load_api_keys()) == [K1]
    monkeypatch.delenv("GEMINI_API_KEY_5")
    monkeypatch.setenv("GEMINI_API_KEYS", K2)
    assert texts(load_api_keys()) == [K2]


def test_empty_gemini_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "   ")
    monkeypatch.setenv("GEMINI_API_KEY_1", "")
    monkeypatch.setenv("GEMINI_API_KEYS", " , ,")
    monkeypatch.setenv("GOOGLE_API_KEY", G)
    assert texts(load_api_keys()) == [G]


# -- cleaning -----------------------------------------------------------------------------------


def test_whitespace_and_quotes_are_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", f'  "{K1}"  ')
    monkeypatch.setenv("GEMINI_API_KEY_1", f"\t'{K2}'\n")
    monkeypatch.setenv("GEMINI_API_KEYS", f" {K3} , '{K4}',, \"{G}\" ,")
    assert texts(load_api_keys()) == [K1, K2, K3, K4, G]


def test_a_quoted_key_list_is_unquoted_as_a_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEYS", f'"{K1}, {K2}"')
    assert texts(load_api_keys()) == [K1, K2]


def test_duplicates_are_dropped_with_a_masked_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", K1)
    monkeypatch.setenv("GEMINI_API_KEY_1", f" {K1} ")
    monkeypatch.setenv("GEMINI_API_KEY_2", K2)
    monkeypatch.setenv("GEMINI_API_KEYS", f"{K2},{K3},{K1}")
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        keys = load_api_keys()
    assert texts(keys) == [K1, K2, K3]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "3 duplicate" in message
    assert mask_key(K1) in message
    assert mask_key(K2) in message
    for key in (K1, K2, K3):
        assert key not in caplog.text
        assert key[:-4] not in caplog.text


def test_no_key_names_the_variables_looked_at() -> None:
    with pytest.raises(ValueError, match="No Gemini API key") as info:
        load_api_keys()
    text = str(info.value)
    for name in ("GEMINI_API_KEY,", "GEMINI_API_KEY_1", "GEMINI_API_KEYS", "GOOGLE_API_KEY"):
        assert name in text
    assert "api_keys=" in text


def test_no_key_with_env_file_names_the_file(clean_env: Path) -> None:
    env = write_env(clean_env / "keys.env", "OTHER=1\n")
    with pytest.raises(ValueError, match=r"keys\.env"):
        load_api_keys(env_file=env)


# -- .env files ---------------------------------------------------------------------------------


def test_nearest_env_file_upward_from_the_working_directory(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env(clean_env / ".env", f"GEMINI_API_KEY_1={K1}\nGEMINI_API_KEY_2='{K2}'\n")
    deeper = clean_env / "src" / "pkg"
    deeper.mkdir(parents=True)
    monkeypatch.chdir(deeper)
    assert texts(load_api_keys()) == [K1, K2]


def test_the_nearest_env_file_wins_over_one_further_up(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env(clean_env / ".env", f"GEMINI_API_KEY={K1}\n")
    inner = clean_env / "inner"
    inner.mkdir()
    write_env(inner / ".env", f"GEMINI_API_KEY={K2}\n")
    monkeypatch.chdir(inner)
    assert texts(load_api_keys()) == [K2]


def test_environment_wins_over_env_file_and_is_never_modified(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env(
        clean_env / ".env",
        f"GEMINI_API_KEY={K1}\nGEMINI_API_KEY_1={K2}\nGEMINI_API_KEYS={K4}\n",
    )
    monkeypatch.setenv("GEMINI_API_KEY", K3)
    before = dict(os.environ)
    keys = load_api_keys()
    assert texts(keys) == [K3, K2, K4]
    assert dict(os.environ) == before
    assert "GEMINI_API_KEY_1" not in os.environ


def test_explicit_env_file_is_read_instead_of_the_nearest(clean_env: Path, tmp_path: Path) -> None:
    write_env(clean_env / ".env", f"GEMINI_API_KEY={K1}\n")
    other = write_env(tmp_path / "team.env", f"export GEMINI_API_KEY={K2}\n# a comment\n")
    assert texts(load_api_keys(env_file=other)) == [K2]
    assert texts(load_api_keys(env_file=str(other))) == [K2]


def test_google_api_key_from_env_file_is_a_fallback_only(clean_env: Path) -> None:
    write_env(clean_env / ".env", f"GOOGLE_API_KEY={G}\n")
    assert texts(load_api_keys()) == [G]
    write_env(clean_env / ".env", f"GOOGLE_API_KEY={G}\nGEMINI_API_KEY_3={K3}\n")
    assert texts(load_api_keys()) == [K3]


def test_missing_env_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"does not exist or is not a file.*env_file unset"):
        load_api_keys(env_file=tmp_path / "nope.env")
    with pytest.raises(ValueError, match="not a file"):
        load_api_keys(env_file=tmp_path)


def test_env_file_that_is_not_text_is_a_clear_error(clean_env: Path) -> None:
    (clean_env / ".env").write_bytes(b"GEMINI_API_KEY=\xff\xfe\x00garbage\n")
    with pytest.raises(ValueError, match=r"Could not read the \.env file .*UTF-8"):
        load_api_keys()


def test_env_file_with_unparsable_lines_is_a_clear_error_without_its_text(
    clean_env: Path,
) -> None:
    write_env(
        clean_env / ".env",
        f"GEMINI_API_KEY_1={K1}\nthis line is not an assignment {K3}\n"
        f'GEMINI_API_KEY_2="{K2}\nGEMINI_API_KEY_4={K4}\n',
    )
    with pytest.raises(ValueError, match=r"line 2") as info:
        load_api_keys()
    text = str(info.value)
    assert ".env" in text
    assert "NAME=value" in text
    for key in (K1, K2, K3, K4):
        assert key not in text


# -- masking ------------------------------------------------------------------------------------


def test_mask_key_keeps_only_the_last_four_characters() -> None:
    assert mask_key(K1) == "…0001"
    assert mask_key(SecretStr(K2)) == "…0002"
    assert mask_key(f"  {K3}\n") == "…0003"
    assert mask_key("abcd") == "…"
    assert mask_key("") == "…"


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=0, max_size=60))
def test_mask_key_never_shows_more_than_four_characters(key: str) -> None:
    masked = mask_key(key)
    assert masked.startswith("…")
    assert len(masked) <= 5
    stripped = key.strip()
    if len(stripped) > 4:
        assert masked == "…" + stripped[-4:]


def test_loaded_keys_do_not_show_their_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", K1)
    keys = load_api_keys()
    assert K1 not in repr(keys)
    assert K1 not in str(keys)


# -- normalize_keys -----------------------------------------------------------------------------


def test_a_plain_list_makes_each_key_its_own_project() -> None:
    entries = normalize_keys([K1, SecretStr(K2), f" '{K3}' "])
    assert [e.secret.get_secret_value() for e in entries] == [K1, K2, K3]
    assert [e.project for e in entries] == [
        f"project-{mask_key(K1)}",
        f"project-{mask_key(K2)}",
        f"project-{mask_key(K3)}",
    ]
    assert [e.fingerprint for e in entries] == ["…0001", "…0002", "…0003"]


def test_a_single_string_is_one_key() -> None:
    assert [e.fingerprint for e in normalize_keys(K1)] == ["…0001"]
    assert [e.fingerprint for e in normalize_keys(SecretStr(K1))] == ["…0001"]


def test_distinct_keys_with_the_same_last_four_characters_stay_distinct_projects() -> None:
    a, b, c = "AIzaSyFAKE-aaaaaaaaa-1234", "AIzaSyFAKE-bbbbbbbbb-1234", "AIzaSyFAKE-ccccccccc-1234"
    entries = normalize_keys([a, b, c, "tiny", "tin2"])
    projects = [e.project for e in entries]
    assert len(set(projects)) == len(projects) == 5
    for project in projects:
        assert "aaaa" not in project
        assert "bbbb" not in project


def test_a_mapping_groups_keys_by_project() -> None:
    entries = normalize_keys({" team-a ": [K1, K2], "team-b": K3, "team-c": (SecretStr(K4),)})
    assert [(e.fingerprint, e.project) for e in entries] == [
        ("…0001", "team-a"),
        ("…0002", "team-a"),
        ("…0003", "team-b"),
        ("…0004", "team-c"),
    ]


def test_duplicates_across_projects_keep_the_first(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        entries = normalize_keys({"a": [K1, "", K2], "b": [f" {K1}", K3, K2]})
    assert [(e.fingerprint, e.project) for e in entries] == [
        ("…0001", "a"),
        ("…0002", "a"),
        ("…0003", "b"),
    ]
    assert "2 duplicate" in caplog.text
    assert K1 not in caplog.text
    assert K2 not in caplog.text


def test_key_entry_repr_is_masked() -> None:
    entry = KeyEntry(SecretStr(K1), "team")
    assert repr(entry) == "KeyEntry('…0001', project='team')"
    assert K1 not in str(entry)


def test_a_key_that_is_not_text_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="str or a pydantic SecretStr, not int"):
        normalize_keys([K1, 12345])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not bytes"):
        normalize_keys({"p": [K1.encode()]})


def test_no_usable_key_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"no usable key.*GEMINI_API_KEY"):
        normalize_keys(["", "  ", "''"])
    with pytest.raises(ValueError, match="no usable key"):
        normalize_keys([])


def test_project_names_must_be_non_empty_strings() -> None:
    with pytest.raises(ValueError, match="Project names"):
        normalize_keys({"  ": [K1]})
    with pytest.raises(ValueError, match="Project names"):
        normalize_keys({3: [K1]})  # type: ignore[dict-item]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from([K1, K2, K3, K4, G, f" {K1} ", f"'{K2}'", "", "  "]),
        min_size=1,
        max_size=12,
    )
)
def test_normalize_keeps_first_occurrences_in_order(raw: list[str]) -> None:
    cleaned = [r.strip().strip("'").strip() for r in raw]
    expected = list(dict.fromkeys(c for c in cleaned if c))
    if not expected:
        with pytest.raises(ValueError):
            normalize_keys(raw)
        return
    entries = normalize_keys(raw)
    assert [e.secret.get_secret_value() for e in entries] == expected
    assert len({e.project for e in entries}) == len(entries)


# -- what a key may hold (issue 9, item 1) ------------------------------------------------------


def windows(key: str, size: int = 8) -> set[str]:
    """Every ``size``-character window of ``key``: none may appear where a key must not."""
    return {key[i : i + size] for i in range(max(1, len(key) - size + 1))}


def assert_no_key_text(text: str, *keys: str) -> None:
    for key in keys:
        leaked = [w for w in windows(key) if w in text]
        assert not leaked, f"key text {leaked[:3]} in {text!r}"


BAD_CHARACTERS = [
    (" ", "a space"),
    ("\n", "a line break"),
    ("\r", "a carriage return"),
    ("\t", "a tab"),
    ("\x00", "a NUL character"),
    ("\x7f", "a control character (U+007F)"),
    ("\x1b", "a control character (U+001B)"),
    ("é", "a non-ASCII character (U+00E9)"),
    ("\u200b", "a non-ASCII character (U+200B)"),
    ("\u2028", "a non-ASCII character (U+2028)"),
    ("#", "a '#'"),
]


@pytest.mark.parametrize(("char", "described"), BAD_CHARACTERS)
def test_a_key_with_a_bad_character_names_its_position_and_masks_it(
    char: str, described: str
) -> None:
    bad = f"AIzaSyFAKE-broken{char}key-0000777"
    with pytest.raises(ValueError) as info:
        normalize_keys([K1, bad])
    text = str(info.value)
    assert "api_keys[1]" in text
    assert described in text
    assert "…0777" in text
    assert "printable ASCII" in text
    assert_no_key_text(text, bad, K1)
    assert info.value.__context__ is None and info.value.__cause__ is None


def test_a_bad_key_in_a_mapping_names_the_project_and_position() -> None:
    with pytest.raises(ValueError, match=r"api_keys\['team-a'\]\[1\] contains a space"):
        normalize_keys({"team-a": [K1, "AIzaSyFAKE two-0000"], "team-b": [K2]})


def test_add_keys_names_its_own_argument() -> None:
    with pytest.raises(ValueError, match=r"add_keys\(keys\)\[0\] contains a NUL"):
        normalize_keys(["AIzaSyFAKE\x00-nul-0000"], "add_keys(keys)")


def test_the_mask_of_a_key_ending_in_a_bad_character_is_printable() -> None:
    with pytest.raises(ValueError) as info:
        normalize_keys(["AIzaSyFAKE-ends-in-é\x00"])
    assert "The API key …n-?? in api_keys[0]" in str(info.value)
    assert "\x00" not in str(info.value)


@pytest.mark.parametrize("separator", ["\n", "\r\n", ",\n", " \n ", "\n\n"])
def test_a_string_of_keys_splits_on_line_breaks_as_on_commas(separator: str) -> None:
    entries = normalize_keys(separator.join([K1, K2, K3]))
    assert [e.secret.get_secret_value() for e in entries] == [K1, K2, K3]


def test_a_list_item_holding_two_lines_is_refused_not_split() -> None:
    with pytest.raises(ValueError, match=r"api_keys\[0\] contains a line break"):
        normalize_keys([f"{K1}\n{K2}"])


def test_every_printable_ascii_character_but_hash_is_accepted() -> None:
    allowed = "".join(chr(c) for c in range(33, 127) if chr(c) != "#")
    key = f"AIzaSyFAKE{allowed}"
    # quotes at both ends would be stripped as quoting: keep the key unquoted
    assert [e.secret.get_secret_value() for e in normalize_keys([key])] == [key]


@pytest.mark.parametrize(
    ("value", "shape"),
    [(123, "int"), (12.5, "float"), (b"AIzaSyFAKE-bytes-0001", "bytes"), (None, "NoneType")],
)
def test_api_keys_of_the_wrong_type_say_what_api_keys_takes(value: object, shape: str) -> None:
    with pytest.raises(TypeError) as info:
        normalize_keys(value)  # type: ignore[arg-type]
    assert f"got {shape}" in str(info.value)
    assert "a list of keys, or a mapping project name -> keys" in str(info.value)


def test_a_mapping_value_of_the_wrong_type_names_its_project() -> None:
    with pytest.raises(TypeError, match=r"api_keys\['p'\] must be .* got int"):
        normalize_keys({"p": 5})  # type: ignore[dict-item]


def _boilerplate() -> str:
    """The fixed prose of the key errors, from keys of neutral filler and each bad character:
    a "key" that is itself a piece of that prose cannot be told from it, whatever the code."""
    texts = []
    for bad in (" ", "\t", "\x00", "\n", "é", "#", "\x7f"):
        try:
            normalize_keys(["ZZZZZZ" + bad + "ZZZZZZ"])
        except ValueError as exc:
            texts.append(str(exc))
    return "\n".join(texts)


_BOILERPLATE = _boilerplate()


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=5, max_size=50))
def test_any_text_is_a_key_or_a_clear_error_without_its_text(raw: str) -> None:
    cleaned = raw.strip()
    if len(cleaned) >= 2 and cleaned[0] == cleaned[-1] and cleaned[0] in "'\"":
        cleaned = cleaned[1:-1].strip()
    assume(not any(w in _BOILERPLATE for w in windows(cleaned)))  # e.g. "0 charact"
    valid = bool(cleaned) and all("!" <= c <= "~" and c != "#" for c in cleaned)
    if not valid:
        with pytest.raises(ValueError, match=r"printable ASCII|no usable key") as info:
            normalize_keys([raw])
        if len(cleaned) >= 8:
            assert_no_key_text(str(info.value), cleaned)
        return
    entries = normalize_keys([raw])
    key = entries[0].secret.get_secret_value()
    assert all("!" <= c <= "~" and c != "#" for c in key)


# -- keys from the environment: line breaks, comments, .env oddities ----------------------------


def test_a_bad_key_in_a_variable_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY_1", K1)
    monkeypatch.setenv("GEMINI_API_KEY_2", "AIzaSyFAKE second-key-00002")
    with pytest.raises(ValueError, match=r"in GEMINI_API_KEY_2 contains a space") as info:
        load_api_keys()
    assert "GEMINI_API_KEY_1, GEMINI_API_KEY_2" in str(info.value)  # the remedy
    assert_no_key_text(str(info.value), "AIzaSyFAKE second-key-00002")


def test_a_line_break_inside_a_numbered_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY_3", f"{K1}\n{K2}")
    with pytest.raises(ValueError, match=r"GEMINI_API_KEY_3 contains a line break"):
        load_api_keys()


@pytest.mark.parametrize("separator", ["\n", "\r\n", ",\n", "\n,\n"])
def test_gemini_api_keys_splits_on_line_breaks(
    monkeypatch: pytest.MonkeyPatch, separator: str
) -> None:
    monkeypatch.setenv("GEMINI_API_KEYS", separator.join([K1, K2, K3]) + separator)
    assert texts(load_api_keys()) == [K1, K2, K3]


def test_a_multi_line_gemini_api_keys_in_a_env_file(clean_env: Path) -> None:
    write_env(clean_env / ".env", f'GEMINI_API_KEYS="{K1}\n{K2}\n  {K3}\n"\nOTHER=1\n')
    assert texts(load_api_keys()) == [K1, K2, K3]


def test_a_bad_item_of_gemini_api_keys_is_named_by_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEYS", f"{K1},AIzaSyFAKE-é-00003")
    with pytest.raises(ValueError, match=r"GEMINI_API_KEYS \(item 2\) contains a non-ASCII"):
        load_api_keys()


def test_a_hash_without_a_space_is_cut_off_with_a_warning(
    clean_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_env(
        clean_env / ".env",
        f"GEMINI_API_KEY_1={K1}#team a key\nGEMINI_API_KEY_2={K2} # a proper comment\n",
    )
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        keys = load_api_keys()
    assert texts(keys) == [K1, K2]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "GEMINI_API_KEY_1 has a '#'" in warnings[0]
    assert_no_key_text(caplog.text, K1, K2)


def test_a_hash_in_a_key_list_is_cut_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEYS", f"{K1}#first\n{K2}\n#{K3}")
    assert texts(load_api_keys()) == [K1, K2]


def test_a_variable_set_twice_in_a_env_file_warns_and_the_last_wins(
    clean_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_env(
        clean_env / ".env",
        f"GEMINI_API_KEY_1={K1}\nOTHER=a\nOTHER=b\nGEMINI_API_KEY_1={K2}\n",
    )
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        keys = load_api_keys()
    assert texts(keys) == [K2]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # OTHER is not ours to judge
    assert "GEMINI_API_KEY_1 more than once (lines 1, 4)" in warnings[0]
    assert_no_key_text(caplog.text, K1, K2)


@pytest.mark.parametrize(
    "content",
    [
        f"\ufeffGEMINI_API_KEY_1={K1}\nGEMINI_API_KEY_2={K2}\n",  # byte-order mark
        f"GEMINI_API_KEY_1={K1}\r\nGEMINI_API_KEY_2={K2}\r\n",  # CRLF
        f"export GEMINI_API_KEY_1={K1}\nexport GEMINI_API_KEY_2='{K2}'\n",
        f"GEMINI_API_KEY_1=\"{K1}\"\r\nGEMINI_API_KEY_2 = '{K2}'\r\n",
        f'GEMINI_API_KEYS="{K1}\r\n{K2}"\r\n',
    ],
    ids=["bom", "crlf", "export", "quotes-crlf", "crlf-inside-quotes"],
)
def test_env_file_oddities_load_the_same_keys(clean_env: Path, content: str) -> None:
    (clean_env / ".env").write_bytes(content.encode("utf-8"))
    assert texts(load_api_keys()) == [K1, K2]


def test_a_latin_1_env_file_names_the_line_and_carries_no_file_bytes(clean_env: Path) -> None:
    (clean_env / ".env").write_bytes(
        f"GEMINI_API_KEY_1={K1}\n# caf\xe9\nGEMINI_API_KEY_2={K2}\n".encode("latin-1")
    )
    with pytest.raises(ValueError, match=r"not UTF-8 text \(byte 0xE9 on line 2\)") as info:
        load_api_keys()
    assert info.value.__context__ is None  # a UnicodeDecodeError would hold the file's bytes
    assert_no_key_text(str(info.value), K1, K2)
