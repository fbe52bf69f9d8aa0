"""Hypothesis strategies shared by the test suite.

Names are drawn from a deliberately tiny alphabet of dotted segments (``"a"``, ``"b"``,
``"ab"``, ``"A"``) so that equal ids, ids that are prefixes of one another (``"a"``,
``"a.b"``, ``"ab"``) and ids that differ only in case all turn up often. Ids and types are
drawn from the same space on purpose: a policy whose id equals another policy's type is what
catches an index that looks a value up in the wrong table.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from policy_pubsub.matching import PREFIX_MARK

#: The segments dotted names are built from; ``"ab"`` starts with ``"a"`` and ``"A"`` differs
#: from ``"a"`` only in case.
SEGMENTS: tuple[str, ...] = ("a", "b", "ab", "A")

FilterValue = str | list[str]
PolicyFilter = dict[str, FilterValue]
ToscaPolicy = dict[str, Any]


def dotted_names(max_segments: int = 3) -> st.SearchStrategy[str]:
    """Names such as ``"a"``, ``"a.b"`` or ``"ab.A.a"``: one to `max_segments` segments."""
    return st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=max_segments).map(".".join)


def policy_ids() -> st.SearchStrategy[str]:
    """Policy ids (valid against ``POLICY_ID_PATTERN``) that often collide or prefix each other."""
    return dotted_names()


def policy_types() -> st.SearchStrategy[str]:
    """Policy types, from the same small space as the ids."""
    return dotted_names()


@st.composite
def prefix_patterns(draw: st.DrawFn, names: st.SearchStrategy[str]) -> str:
    """A prefix pattern (``"<prefix>*"``) cut from a drawn name at any point, so ``"*"`` too.

    Cutting mid-segment (``"a"`` from ``"ab"``) is allowed: the prefix is of characters, not
    of segments.
    """
    name = draw(names)
    cut = draw(st.integers(min_value=0, max_value=len(name)))
    return name[:cut] + PREFIX_MARK


def filter_patterns(names: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """One value of a filter key: mostly an exact name, sometimes a prefix, sometimes ``"*"``."""
    return st.one_of(names, prefix_patterns(names), st.just(PREFIX_MARK))


def filter_values(names: st.SearchStrategy[str]) -> st.SearchStrategy[FilterValue]:
    """The wire value of a filter key: a single pattern or a non-empty list of them."""
    patterns = filter_patterns(names)
    return st.one_of(patterns, st.lists(patterns, min_size=1, max_size=4))


def policy_filters(
    ids: st.SearchStrategy[str] | None = None,
    types: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[PolicyFilter]:
    """A valid wire policy filter: ``"policy-id"``, ``"policy-type"`` or both, never neither."""
    id_values = filter_values(policy_ids() if ids is None else ids)
    type_values = filter_values(policy_types() if types is None else types)
    return st.one_of(
        st.fixed_dictionaries({"policy-id": id_values}),
        st.fixed_dictionaries({"policy-type": type_values}),
        st.fixed_dictionaries({"policy-id": id_values, "policy-type": type_values}),
    )


def filter_lists(min_size: int = 1, max_size: int = 4) -> st.SearchStrategy[list[PolicyFilter]]:
    """A subscription's ``policy-filters``: a non-empty list of valid filters by default."""
    return st.lists(policy_filters(), min_size=min_size, max_size=max_size)


def versions() -> st.SearchStrategy[str]:
    """Semantic version strings such as ``"1.0.0"``."""
    part = st.integers(min_value=0, max_value=3).map(str)
    return st.tuples(part, part, part).map(".".join)


def json_values(max_leaves: int = 6) -> st.SearchStrategy[Any]:
    """Small JSON values, as found in a policy's ``properties``."""
    scalars = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8)
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=6), children, max_size=3)
        ),
        max_leaves=max_leaves,
    )


def policy_properties() -> st.SearchStrategy[dict[str, Any]]:
    """A policy's ``properties``: a small JSON object."""
    return st.dictionaries(st.text(min_size=1, max_size=8), json_values(), max_size=4)


def tosca_policies(
    ids: st.SearchStrategy[str] | None = None,
    types: st.SearchStrategy[str] | None = None,
    properties: st.SearchStrategy[dict[str, Any]] | None = None,
) -> st.SearchStrategy[ToscaPolicy]:
    """A ToscaPolicy dict in ONAP form, with ``name``/``version`` agreeing with ``metadata``."""
    # Sub-strategies are built once here, not on every draw: building them is the slow part.
    id_strategy = policy_ids() if ids is None else ids
    type_strategy = policy_types() if types is None else types
    properties_strategy = policy_properties() if properties is None else properties
    version_strategy = versions()

    @st.composite
    def build(draw: st.DrawFn) -> ToscaPolicy:
        policy_id = draw(id_strategy)
        version = draw(version_strategy)
        return {
            "type": draw(type_strategy),
            "type_version": draw(version_strategy),
            "name": policy_id,
            "version": version,
            "metadata": {"policy-id": policy_id, "policy-version": version},
            "properties": draw(properties_strategy),
        }

    return build()


#: Strings that break encoders and databases, drawn often rather than by luck.
TRICKY_STRINGS = (
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfff",
    "\u2028",
    "\ufeff",
    "\U0001d54b",
    '"\\',
)
#: Integers at and past the 64-bit edges.
EDGE_INTEGERS = (2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30))


def any_json(keys: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Any]:
    """Any JSON value, for fuzzing: nested objects and arrays; strings of any code points,
    NUL and lone surrogates included (``json.dumps`` writes them as ``\\ud800``); integers
    past 64 bits; floats including NaN and infinities (written as ``NaN``/``Infinity``, which
    is not JSON); booleans, null. Object keys are drawn from ``keys`` (e.g. the request
    schemas' field names) or any text.
    """
    text = st.text(st.characters(), max_size=20) | st.sampled_from(TRICKY_STRINGS)
    names = text if keys is None else keys | text
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.sampled_from(EDGE_INTEGERS)
        | st.integers(min_value=10**18, max_value=2**63 - 1)  # 19 digits, within 64 bits
        | st.floats()
        | text
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=5) | st.dictionaries(names, children, max_size=6)
        ),
        max_leaves=30,
    )
