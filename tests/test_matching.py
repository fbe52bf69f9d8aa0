"""Policy filter semantics (API.md "Policy filters") and the indexes that implement them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from policy_pubsub.matching import PREFIX_MARK, PolicyIndex, Selector, SubscriptionIndex
from tests.strategies import (
    PolicyFilter,
    ToscaPolicy,
    filter_lists,
    policy_ids,
    policy_types,
    tosca_policies,
)

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)
# On a failure, the explain phase and shrinking every distinct bug cost this test minutes (past
# the per-test timeout); without them it reports one shrunk counterexample in about 20 seconds.
STATEFUL_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    report_multiple_bugs=False,
    phases=tuple(phase for phase in Phase if phase is not Phase.explain),
)

SUBSCRIBERS = ("s1", "s2", "s3", "s4", "s5")


# --- references ------------------------------------------------------------------------------


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _pattern_matches(pattern: str, value: str) -> bool:
    if pattern.endswith(PREFIX_MARK):
        return value.startswith(pattern[: -len(PREFIX_MARK)])
    return value == pattern


def spec_matches(filters: Iterable[Mapping[str, Any]], policy_id: str, policy_type: str) -> bool:
    """API.md read literally, filter by filter, with no normalisation into a Selector."""
    return any(
        any(_pattern_matches(p, policy_id) for p in _as_list(f.get("policy-id")))
        or any(_pattern_matches(p, policy_type) for p in _as_list(f.get("policy-type")))
        for f in filters
    )


def verdict(filters: list[PolicyFilter], policy_id: str, policy_type: str) -> bool:
    """Whether the filters match the policy, after checking every code path agrees on it."""
    selector = Selector.from_filters(filters)
    subscriptions = SubscriptionIndex()
    subscriptions.put("sub", selector)
    policies: PolicyIndex[None] = PolicyIndex()
    policies.put(policy_id, policy_type, None)
    verdicts = {
        "spec": spec_matches(filters, policy_id, policy_type),
        "Selector.matches": selector.matches(policy_id, policy_type),
        "SubscriptionIndex": selector in subscriptions.selectors_matching(policy_id, policy_type),
        "PolicyIndex": policy_id in policies.select(selector),
    }
    assert len(set(verdicts.values())) == 1, verdicts
    return verdicts["spec"]


# --- semantics, by example ---------------------------------------------------------------------


def test_exact_id_matches_only_that_id() -> None:
    """An exact policy-id matches that id and not its prefixes, extensions or siblings."""
    filters: list[PolicyFilter] = [{"policy-id": "onap.restart.tca"}]
    assert verdict(filters, "onap.restart.tca", "any.type")
    assert not verdict(filters, "onap.restart", "any.type")
    assert not verdict(filters, "onap.restart.tca.v2", "any.type")
    assert not verdict(filters, "onap.restart.tcb", "any.type")


def test_exact_type_matches_only_that_type() -> None:
    """An exact policy-type matches policies of that type whatever their id, and no other type."""
    filters: list[PolicyFilter] = [{"policy-type": "onap.policies.monitoring.tcagen2"}]
    assert verdict(filters, "p1", "onap.policies.monitoring.tcagen2")
    assert verdict(filters, "p2", "onap.policies.monitoring.tcagen2")
    assert not verdict(filters, "p1", "onap.policies.monitoring")
    assert not verdict(filters, "p1", "onap.policies.monitoring.tcagen2.x")


def test_id_filter_does_not_match_on_type_and_vice_versa() -> None:
    """An id is never compared with the listed types, nor a type with the listed ids."""
    assert not verdict([{"policy-id": "x"}], "p", "x")
    assert not verdict([{"policy-type": "x"}], "x", "t")
    assert not verdict([{"policy-id": "x*"}], "p", "x.t")
    assert not verdict([{"policy-type": "x*"}], "x.p", "t")


def test_or_within_a_key() -> None:
    """A list value matches when any one of its entries does."""
    filters: list[PolicyFilter] = [{"policy-id": ["a", "b"]}]
    assert verdict(filters, "a", "t")
    assert verdict(filters, "b", "t")
    assert not verdict(filters, "c", "t")
    types: list[PolicyFilter] = [{"policy-type": ["t1", "t2"]}]
    assert verdict(types, "p", "t1")
    assert verdict(types, "p", "t2")
    assert not verdict(types, "p", "t3")


def test_or_across_keys() -> None:
    """A filter with both keys matches on the id OR on the type, not only on both."""
    filters: list[PolicyFilter] = [{"policy-id": "a", "policy-type": "t"}]
    assert verdict(filters, "a", "t")
    assert verdict(filters, "a", "other")
    assert verdict(filters, "other", "t")
    assert not verdict(filters, "other", "other")


def test_trailing_star_is_a_character_prefix() -> None:
    """A value ending in `*` matches every value that starts with the rest, cut at any character."""
    filters: list[PolicyFilter] = [{"policy-type": "onap.policies.monitoring.*"}]
    assert verdict(filters, "p", "onap.policies.monitoring.tcagen2")
    assert verdict(filters, "p", "onap.policies.monitoring.")
    assert not verdict(filters, "p", "onap.policies.monitoring")
    assert not verdict(filters, "p", "onap.policies.controlloop.Guard")
    ids: list[PolicyFilter] = [{"policy-id": "onap.re*"}]
    assert verdict(ids, "onap.restart.tca", "t")
    assert verdict(ids, "onap.re", "t")
    assert not verdict(ids, "onap.r", "t")


def test_star_elsewhere_is_literal() -> None:
    """Only a trailing `*` is special: one inside a value is compared literally."""
    filters: list[PolicyFilter] = [{"policy-id": "a*b"}]
    assert verdict(filters, "a*b", "t")
    assert not verdict(filters, "ab", "t")
    assert not verdict(filters, "axb", "t")


def test_double_star_is_a_prefix_ending_in_star() -> None:
    """Only the last `*` is the mark, so `a**` is the prefix `a*`."""
    filters: list[PolicyFilter] = [{"policy-id": "a**"}]
    assert verdict(filters, "a*b", "t")
    assert not verdict(filters, "ab", "t")


@given(policy_id=st.text(max_size=10), policy_type=st.text(max_size=10))
@PROPERTY_SETTINGS
def test_bare_star_matches_everything(policy_id: str, policy_type: str) -> None:
    """A bare `*` as id or as type matches every policy, even one with an empty id or type."""
    assert verdict([{"policy-id": "*"}], policy_id, policy_type)
    assert verdict([{"policy-type": "*"}], policy_id, policy_type)
    assert verdict([{"policy-id": ["nothing", "*"]}], policy_id, policy_type)


def test_subscription_is_the_union_of_its_filters() -> None:
    """A list of filters matches a policy when any one filter does."""
    filters: list[PolicyFilter] = [
        {"policy-id": "a"},
        {"policy-type": "t"},
        {"policy-id": "p.*"},
    ]
    assert verdict(filters, "a", "x")
    assert verdict(filters, "b", "t")
    assert verdict(filters, "p.q", "x")
    assert not verdict(filters, "b", "x")


def test_matching_is_case_sensitive() -> None:
    """Ids, types and prefixes are compared case-sensitively."""
    assert not verdict([{"policy-id": "onap.Restart"}], "onap.restart", "t")
    assert not verdict([{"policy-type": "Onap.policies"}], "p", "onap.policies")
    assert not verdict([{"policy-id": "ONAP.*"}], "onap.restart", "t")
    assert not verdict([{"policy-type": "onap.P*"}], "p", "onap.policies")
    assert verdict([{"policy-id": "onap.R*"}], "onap.Restart", "t")


def test_no_filters_match_nothing() -> None:
    """An empty filter list (refused on the wire) gives a selector that matches no policy."""
    assert Selector.from_filters([]) == Selector()
    assert not verdict([], "a", "t")


def test_from_filters_normalises_into_exact_and_prefix_sets() -> None:
    """Filters collapse into sets of exact ids/types and of prefixes with the `*` removed."""
    selector = Selector.from_filters(
        [{"policy-id": ["a", "b*"], "policy-type": "t*"}, {"policy-type": ["u", "*"]}]
    )
    assert selector == Selector(
        ids=frozenset({"a"}),
        id_prefixes=frozenset({"b"}),
        types=frozenset({"u"}),
        type_prefixes=frozenset({"t", ""}),
    )


def test_equal_filters_give_equal_hashable_selectors() -> None:
    """Reordered, duplicated or differently shaped but equal filters give one selector."""
    one = Selector.from_filters([{"policy-id": ["a", "b"]}, {"policy-type": "t"}])
    two = Selector.from_filters(
        [{"policy-type": ["t"]}, {"policy-id": "b"}, {"policy-id": ["a", "a"], "policy-type": "t"}]
    )
    assert one == two
    assert hash(one) == hash(two)
    assert len({one, two}) == 1


# --- SubscriptionIndex and PolicyIndex bookkeeping ---------------------------------------------


def test_subscribers_with_equal_selectors_share_one_entry() -> None:
    """Subscribers with equal selectors are members of one selector, found once."""
    index = SubscriptionIndex()
    index.put("s1", Selector.from_filters([{"policy-id": "a"}]))
    index.put("s2", Selector.from_filters([{"policy-id": ["a"]}]))
    selectors = index.selectors_matching("a", "t")
    assert len(selectors) == 1
    assert index.members(selectors.pop()) == {"s1", "s2"}
    assert len(index) == 2
    assert "s1" in index
    assert "s3" not in index


def test_put_moves_a_subscriber_and_remove_forgets_it() -> None:
    """Putting a subscriber again moves it to the new selector; removing it unlinks it."""
    index = SubscriptionIndex()
    old = Selector.from_filters([{"policy-id": "a*"}])
    new = Selector.from_filters([{"policy-type": "t"}])
    index.put("s1", old)
    index.put("s1", new)
    assert index.selector_of("s1") == new
    assert index.selectors_matching("a", "x") == set()
    assert index.selectors_matching("b", "t") == {new}
    assert index.members(old) == frozenset()
    index.remove("s1")
    index.remove("s1")  # removing an absent subscriber is a no-op
    assert index.selector_of("s1") is None
    assert index.selectors_matching("b", "t") == set()
    assert len(index) == 0


def test_policy_put_replaces_id_and_type() -> None:
    """Putting a policy id again replaces its value and type; remove returns the value."""
    index: PolicyIndex[str] = PolicyIndex()
    index.put("p", "t1", "v1")
    index.put("p", "t2", "v2")
    assert index.get("p") == "v2"
    assert index.type_of("p") == "t2"
    assert len(index) == 1
    assert index.select(Selector.from_filters([{"policy-type": "t1"}])) == set()
    assert index.select(Selector.from_filters([{"policy-type": "t*"}])) == {"p"}
    assert index.remove("p") == "v2"
    assert index.remove("p") is None
    assert "p" not in index
    assert index.get("p") is None
    assert index.type_of("p") is None
    assert list(index.items()) == []


# --- properties --------------------------------------------------------------------------------


@given(filters=filter_lists(min_size=0), policy_id=policy_ids(), policy_type=policy_types())
@PROPERTY_SETTINGS
def test_selector_matches_the_spec(
    filters: list[PolicyFilter], policy_id: str, policy_type: str
) -> None:
    """Selector.matches and both indexes agree with API.md applied filter by filter."""
    verdict(filters, policy_id, policy_type)


@given(
    steps=st.lists(st.tuples(policy_ids(), st.one_of(st.none(), policy_types())), max_size=40),
    filters=filter_lists(),
)
@PROPERTY_SETTINGS
def test_policy_index_select_equals_brute_force(
    steps: list[tuple[str, str | None]], filters: list[PolicyFilter]
) -> None:
    """PolicyIndex.select returns exactly the deployed policies the selector matches."""
    index: PolicyIndex[int] = PolicyIndex()
    deployed: dict[str, str] = {}
    for number, (policy_id, policy_type) in enumerate(steps):
        if policy_type is None:
            index.remove(policy_id)
            deployed.pop(policy_id, None)
        else:
            index.put(policy_id, policy_type, number)
            deployed[policy_id] = policy_type
    selector = Selector.from_filters(filters)
    expected = {pid for pid, ptype in deployed.items() if selector.matches(pid, ptype)}
    assert index.select(selector) == expected
    assert {pid: index.type_of(pid) for pid, _ in index.items()} == deployed


@st.composite
def _equivalent_rewrite(draw: st.DrawFn, filters: list[PolicyFilter]) -> list[PolicyFilter]:
    """The same filters reshaped: split, reordered, duplicated, str and one-element list swapped."""
    pieces: list[PolicyFilter] = []
    for item in filters:
        if len(item) == 2 and draw(st.booleans()):
            pieces.extend({key: value} for key, value in item.items())
        else:
            pieces.append(dict(item))
    rewritten: list[PolicyFilter] = []
    for item in pieces:
        new: PolicyFilter = {}
        for key, value in item.items():
            values = _as_list(value)
            values = values + draw(st.lists(st.sampled_from(values), max_size=2))
            values = draw(st.permutations(values))
            distinct = set(values)
            if len(distinct) == 1 and draw(st.booleans()):
                new[key] = values[0]
            else:
                new[key] = list(values)
        rewritten.append(new)
    rewritten += draw(st.lists(st.sampled_from(rewritten), max_size=2)) if rewritten else []
    return list(draw(st.permutations(rewritten)))


@given(data=st.data(), filters=filter_lists())
@PROPERTY_SETTINGS
def test_equal_filter_lists_give_equal_selectors(
    data: st.DataObject, filters: list[PolicyFilter]
) -> None:
    """Reordering, duplicating, splitting or string/one-element-list swaps keep the selector."""
    rewritten = data.draw(_equivalent_rewrite(filters), label="rewritten")
    one, two = Selector.from_filters(filters), Selector.from_filters(rewritten)
    assert one == two
    assert hash(one) == hash(two)


class IndexMachine(RuleBasedStateMachine):
    """Random puts and removes of subscribers and policies, checked against brute force."""

    def __init__(self) -> None:
        super().__init__()
        self.subscriptions = SubscriptionIndex()
        self.policies: PolicyIndex[ToscaPolicy] = PolicyIndex()
        self.selector_of: dict[str, Selector] = {}
        self.deployed: dict[str, ToscaPolicy] = {}

    @rule(subscriber=st.sampled_from(SUBSCRIBERS), filters=filter_lists())
    def put_subscriber(self, subscriber: str, filters: list[PolicyFilter]) -> None:
        selector = Selector.from_filters(filters)
        self.subscriptions.put(subscriber, selector)
        self.selector_of[subscriber] = selector

    @precondition(lambda self: bool(self.selector_of))
    @rule(data=st.data())
    def move_subscriber_to_a_shared_selector(self, data: st.DataObject) -> None:
        """Give one subscriber another's selector, so selectors gain and lose members."""
        source = data.draw(st.sampled_from(sorted(self.selector_of)), label="source")
        subscriber = data.draw(st.sampled_from(SUBSCRIBERS), label="subscriber")
        selector = self.selector_of[source]
        self.subscriptions.put(subscriber, selector)
        self.selector_of[subscriber] = selector

    @rule(subscriber=st.sampled_from(SUBSCRIBERS))
    def remove_subscriber(self, subscriber: str) -> None:
        self.subscriptions.remove(subscriber)
        self.selector_of.pop(subscriber, None)

    @rule(policy=tosca_policies())
    def put_policy(self, policy: ToscaPolicy) -> None:
        policy_id = policy["metadata"]["policy-id"]
        self.policies.put(policy_id, policy["type"], policy)
        self.deployed[policy_id] = policy

    @rule(data=st.data())
    def remove_policy(self, data: st.DataObject) -> None:
        known = st.sampled_from(sorted(self.deployed)) if self.deployed else st.nothing()
        policy_id = data.draw(known | policy_ids(), label="policy_id")
        removed = self.policies.remove(policy_id)
        assert removed is self.deployed.pop(policy_id, None)

    @rule(policy_id=policy_ids(), policy_type=policy_types())
    def probe(self, policy_id: str, policy_type: str) -> None:
        """Check a policy that need not be deployed."""
        self.check_subscriptions(policy_id, policy_type)

    def check_subscriptions(self, policy_id: str, policy_type: str) -> None:
        selectors = self.subscriptions.selectors_matching(policy_id, policy_type)
        expected_selectors = {
            s for s in self.selector_of.values() if s.matches(policy_id, policy_type)
        }
        assert selectors == expected_selectors
        found: set[str] = set()
        for selector in selectors:
            found |= self.subscriptions.members(selector)
        expected = {sub for sub, s in self.selector_of.items() if s.matches(policy_id, policy_type)}
        assert found == expected

    @invariant()
    def subscriptions_match_brute_force(self) -> None:
        """Every deployed policy reaches exactly the subscribers whose selector matches it."""
        for policy_id, policy in self.deployed.items():
            self.check_subscriptions(policy_id, policy["type"])

    @invariant()
    def membership_is_consistent(self) -> None:
        """The index knows each subscriber's selector and each selector's members."""
        assert len(self.subscriptions) == len(self.selector_of)
        for subscriber in SUBSCRIBERS:
            assert self.subscriptions.selector_of(subscriber) == self.selector_of.get(subscriber)
            assert (subscriber in self.subscriptions) == (subscriber in self.selector_of)
        for selector in set(self.selector_of.values()):
            expected = {sub for sub, s in self.selector_of.items() if s == selector}
            assert self.subscriptions.members(selector) == expected

    @invariant()
    def policy_select_matches_brute_force(self) -> None:
        """Each subscriber's selector selects exactly the deployed policies it matches."""
        assert len(self.policies) == len(self.deployed)
        assert dict(self.policies.items()) == self.deployed
        for selector in set(self.selector_of.values()):
            expected = {pid for pid, p in self.deployed.items() if selector.matches(pid, p["type"])}
            assert self.policies.select(selector) == expected


def test_indexes_equal_brute_force_under_random_updates() -> None:
    """Through any sequence of updates, both indexes answer exactly as brute-force matching."""
    run_state_machine_as_test(IndexMachine, settings=STATEFUL_SETTINGS)


@pytest.mark.parametrize("filters", [[{"policy-id": "*"}], [{"policy-type": "*"}]])
def test_bare_star_subscriber_receives_every_deployed_policy(
    filters: list[PolicyFilter],
) -> None:
    """A `*` subscriber is found for every policy and selects every deployed policy."""
    subscriptions = SubscriptionIndex()
    selector = Selector.from_filters(filters)
    subscriptions.put("all", selector)
    policies: PolicyIndex[None] = PolicyIndex()
    for policy_id, policy_type in [("a", "t"), ("b.c", "u"), ("", "")]:
        policies.put(policy_id, policy_type, None)
        assert subscriptions.selectors_matching(policy_id, policy_type) == {selector}
    assert policies.select(selector) == {"a", "b.c", ""}
