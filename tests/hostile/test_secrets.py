"""harness.secrets: every registered secret and URL credential is taken out of anything
printed or stored, and the openai backend keeps a key echoed back by its server out of the
completion it returns."""

from __future__ import annotations

import json
import secrets as stdlib_secrets
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.secrets import (
    MIN_SECRET_LEN,
    REDACTED,
    Secret,
    redact,
    redact_url,
    register_secret,
    register_url_credentials,
)


@pytest.fixture(autouse=True)
def _restore_registry():
    """Forget what a test registered: the registry is process-wide, and hypothesis draws
    strings from constants of the code under test, so a registered "secret" can be an
    ordinary word ("logprobs") that later tests' messages must still show."""
    import harness.secrets as registry

    saved = registry._secrets
    yield
    registry._secrets = saved


def fresh(prefix: str = "sk-") -> str:
    """A secret no other test registered (the registry is process-wide)."""
    return prefix + stdlib_secrets.token_hex(12)


# ---------------------------------------------------------------------------- unit

def test_registered_secrets_leave_nested_structures_and_the_input_is_untouched():
    a, b = fresh(), fresh("tok-")
    register_secret(a)
    register_secret(b)
    obj = {"error": f"bad key {a}", f"k{b}": [f"x{a}y", (b, 3, None), {"deep": [[a + b]]}],
           "n": 1.5, "ok": True}
    copy = json.loads(json.dumps(obj, default=list))
    out = redact(obj)
    text = repr(out)
    assert a not in text and b not in text
    assert out["error"] == f"bad key {REDACTED}"
    assert out[f"k{REDACTED}"][1] == (REDACTED, 3, None)  # tuples stay tuples, keys redacted
    assert out["n"] == 1.5 and out["ok"] is True
    assert out[f"k{REDACTED}"][2]["deep"] == [[REDACTED + REDACTED]]
    assert json.loads(json.dumps(obj, default=list)) == copy  # a copy: the input is unchanged


def test_a_secret_containing_another_is_removed_whole():
    short, long = fresh("ab-"), None
    long = short + "-and-more"
    register_secret(short)
    register_secret(long)
    assert redact(f"[{long}]") == f"[{REDACTED}]"  # not "<redacted>-and-more"


@pytest.mark.parametrize("value", ["", "EMPTY", "abc", None])
def test_placeholders_and_short_values_are_not_registered(value):
    register_secret(value)
    assert redact("abc EMPTY text") == "abc EMPTY text"
    assert MIN_SECRET_LEN == 4


@pytest.mark.parametrize("url, shown", [
    ("http://user:pw@127.0.0.1:8000/v1", "http://<redacted>@127.0.0.1:8000/v1"),
    ("https://only-user@host/v1", "https://<redacted>@host/v1"),
    ("http://u:p@ss@host/v1?x=a@b", "http://<redacted>@host/v1?x=a@b"),  # unencoded @
    ("see http://host/path@x and ftp://a:b@c", "see http://host/path@x and ftp://<redacted>@c"),
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
    ("mail me at a@b.c", "mail me at a@b.c"),
])
def test_url_credentials(url, shown):
    assert redact_url(url) == shown
    assert redact(url) == shown
    assert redact({"base_url": url}) == {"base_url": shown}


def test_urls_false_keeps_url_text_but_still_removes_secrets():
    key = fresh()
    register_secret(key)
    text = f"http://u:p@h/ {key}"
    assert redact(text, urls=False) == f"http://u:p@h/ {REDACTED}"


def test_url_password_is_registered_raw_decoded_and_as_basic_auth():
    import base64

    pw = "p%40" + stdlib_secrets.token_hex(6)
    register_url_credentials(f"http://alice:{pw}@host/v1")
    basic = base64.b64encode(f"alice:p@{pw[4:]}".encode()).decode()
    out = redact(f"{pw} p@{pw[4:]} Basic {basic}")
    assert out == f"{REDACTED} {REDACTED} Basic {REDACTED}"
    assert redact("alice") == "alice"  # a user name alone is not a secret


def test_secret_wrapper_hides_its_value():
    s = Secret("http://u:hunter2@host/v1")
    assert "hunter2" not in repr(s) + str(s) + repr({"x": s}) + f"{s}"
    assert s.reveal() == "http://u:hunter2@host/v1"
    assert s == Secret(s.reveal()) and hash(s) == hash(Secret(s.reveal()))


# ---------------------------------------------------------------------------- property

_ALPHABET = string.ascii_letters + string.digits + "-_.:/@ {}\"'\n"
_secret = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=8, max_size=24)
_filler = st.text(alphabet=_ALPHABET, max_size=12)


def _nested(leaves):
    return st.recursive(
        leaves,
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.tuples(inner, inner),
                                st.dictionaries(leaves, inner, max_size=3)),
        max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), keys=st.lists(_secret, min_size=1, max_size=3, unique=True))
def test_redact_never_leaves_a_registered_secret(data, keys):
    for k in keys:
        register_secret(k)
    # leaves: filler, a secret embedded in filler, or a non-string
    leaf = st.one_of(
        _filler,
        st.builds(lambda a, k, b: a + k + b, _filler, st.sampled_from(keys), _filler),
        st.integers(), st.none(), st.floats(allow_nan=False))
    obj = data.draw(_nested(leaf))
    out = redact(obj)
    flat = json.dumps(out, default=list)
    for k in keys:
        assert k not in flat
    # and twice is once: redacting redacted output changes nothing
    assert redact(out) == out


@settings(max_examples=100, deadline=None)
@given(user=st.text(alphabet=string.ascii_letters, min_size=1, max_size=8),
       password=st.text(alphabet=string.ascii_letters + string.digits + "!$*+,;=", min_size=1,
                        max_size=12),
       host=st.sampled_from(["127.0.0.1:8000", "example.org", "[::1]:9"]),
       before=_filler, after=_filler)
def test_redact_url_never_leaves_url_credentials(user, password, host, before, after):
    url = f"http://{user}:{password}@{host}/v1"
    out = redact_url(f"{before} {url} {after}")
    assert f"{user}:{password}@" not in out
    assert f"http://{REDACTED}@{host}/v1" in out


# ---------------------------------------------------------------------------- an echoing server

@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_key_echoed_into_a_completion_is_redacted(tmp_path, monkeypatch, endpoint):
    """The server puts the request's Authorization header into the completion text: the
    text the backend returns, passed through `redact` (as the store does), holds no key."""
    from evaluators.generation import SamplingParams
    from evaluators.openai_backend import OpenAIBackend
    from harness.tasks.tiny_models import word_tokenizer
    from tests.hostile.test_services import ReplyServer

    key = fresh("sk-echo-")
    monkeypatch.setenv("SPO_ECHO_KEY", key)
    word_tokenizer(["you", "sent", "Bearer", "q0"]).save_pretrained(tmp_path / "tok")
    server = ReplyServer()
    server.default = ("echo",)
    try:
        backend = OpenAIBackend(str(tmp_path / "tok"), base_url=server.url, model="m",
                                api_key_env="SPO_ECHO_KEY", endpoint=endpoint, max_retries=0)
        (got,) = backend.generate_batch([("q0", 0)], SamplingParams(max_new_tokens=4), 0)
    finally:
        server.close()
    assert server.requests[0]["auth"] == f"Bearer {key}"  # the key was sent, and echoed
    assert key not in redact(got.text) and key not in got.text
    assert got.text == f"you sent Bearer {REDACTED}"
    # the token ids are the redacted text's: decoding them cannot give the key back
    assert got.token_ids == backend.tokenizer(got.text, add_special_tokens=False)["input_ids"]
