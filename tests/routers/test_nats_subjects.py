"""The subjects the NATS router draws (routers/nats_subjects.py): tokens that round-trip
any name, and topics whose subjects never overlap.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy_pubsub.routers.nats_subjects import Subjects, decode_token, encode_token


@given(st.text())
def test_subject_tokens_round_trip(name: str) -> None:
    """Any name encodes to one safe subject token that decodes back to the same name."""
    token = encode_token(name)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert decode_token(token) == name


def test_subject_tokens_keep_names_apart() -> None:
    """Names differing only in '.', ':' or '_' get distinct tokens; letters, digits and '-'
    stay readable.
    """
    names = ["a.b", "a:b", "a_b", "a_2Eb", "ab", "a-b", "", "_"]
    tokens = [encode_token(n) for n in names]
    assert len(set(tokens)) == len(names)
    assert encode_token("policies_DCAE_tca-1.x:y") == "policies_5FDCAE_5Ftca-1_2Ex_3Ay"


@pytest.mark.parametrize("token", ["a.b", "a_2", "a_zz", "_41", "a b", "_2e", "*", ">"])
def test_decoding_rejects_foreign_tokens(token: str) -> None:
    """A token that encode_token cannot have made is refused, not silently mis-read."""
    with pytest.raises(ValueError):
        decode_token(token)


def test_topic_subjects_do_not_overlap() -> None:
    """A topic's filter matches its own subjects only, even when one name prefixes another."""
    subjects = Subjects("S")
    prefix = subjects.topic_filter("a").removesuffix(">")  # what the filter matches
    assert prefix == "S.t.a."
    assert subjects.snapshot("a", "x").startswith(prefix)
    for other in ("ab", "a.b", "a-", "A"):
        assert not subjects.snapshot(other, "x").startswith(prefix)
    assert subjects.snapshot("a.b", "x:1") == "S.t.a_2Eb.k.x_3A1"
    assert subjects.topic_of_wake("S.w.a_2Eb.k.x_3A1") == "a.b"
    assert subjects.topic_of_wake("T.w.a.k.x") is None
    assert subjects.group_of_position(subjects.position("a.b", "g:1")) == ("a.b", "g:1")
    with pytest.raises(ValueError):
        Subjects("bad.name")
