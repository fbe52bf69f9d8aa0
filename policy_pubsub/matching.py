"""Filter semantics and the inverted indexes that make matching cost what it affects.

A policy matches a filter when its id is one of the filter's ids OR its type is one of the
filter's types; a value ending in ``*`` matches by prefix. A subscription matches when any of
its filters does. Because every part is an OR, a subscription's filters collapse into one
:class:`Selector` (the union of their ids and types), and subscriptions with equal selectors
share one snapshot computation.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

PREFIX_MARK = "*"

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Selector:
    """The normalised union of a list of policy filters; hashable, so equal filters share work."""

    ids: frozenset[str] = frozenset()
    id_prefixes: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    type_prefixes: frozenset[str] = frozenset()

    @classmethod
    def from_filters(cls, filters: Iterable[Mapping[str, Any]]) -> Selector:
        """Build from validated wire filters (``{"policy-id": ..., "policy-type": ...}``)."""
        ids: set[str] = set()
        id_prefixes: set[str] = set()
        types: set[str] = set()
        type_prefixes: set[str] = set()
        for item in filters:
            _split(item.get("policy-id"), ids, id_prefixes)
            _split(item.get("policy-type"), types, type_prefixes)
        return cls(
            frozenset(ids), frozenset(id_prefixes), frozenset(types), frozenset(type_prefixes)
        )

    def matches(self, policy_id: str, policy_type: str) -> bool:
        """Brute-force semantics: the reference the indexes are tested against."""
        return (
            policy_id in self.ids
            or policy_type in self.types
            or any(policy_id.startswith(p) for p in self.id_prefixes)
            or any(policy_type.startswith(p) for p in self.type_prefixes)
        )


def _split(value: str | Sequence[str] | None, exact: set[str], prefixes: set[str]) -> None:
    if value is None:
        return
    for item in [value] if isinstance(value, str) else value:
        if item.endswith(PREFIX_MARK):
            prefixes.add(item[: -len(PREFIX_MARK)])
        else:
            exact.add(item)


class _PrefixTable(Generic[V]):
    """Maps prefixes to sets of values; looks up every stored prefix of a string.

    A lookup costs one dict probe per distinct stored prefix length, not one per stored prefix.
    """

    def __init__(self) -> None:
        self._by_prefix: dict[str, set[V]] = {}
        self._length_counts: dict[int, int] = {}

    def add(self, prefix: str, value: V) -> None:
        bucket = self._by_prefix.setdefault(prefix, set())
        if not bucket:
            self._length_counts[len(prefix)] = self._length_counts.get(len(prefix), 0) + 1
        bucket.add(value)

    def discard(self, prefix: str, value: V) -> None:
        bucket = self._by_prefix.get(prefix)
        if bucket is None:
            return
        bucket.discard(value)
        if not bucket:
            del self._by_prefix[prefix]
            count = self._length_counts[len(prefix)] - 1
            if count:
                self._length_counts[len(prefix)] = count
            else:
                del self._length_counts[len(prefix)]

    def lookup(self, text: str) -> Iterator[set[V]]:
        for length in self._length_counts:
            if length <= len(text):
                bucket = self._by_prefix.get(text[:length])
                if bucket:
                    yield bucket


class _ExactTable(Generic[V]):
    def __init__(self) -> None:
        self._by_key: dict[str, set[V]] = {}

    def add(self, key: str, value: V) -> None:
        self._by_key.setdefault(key, set()).add(value)

    def discard(self, key: str, value: V) -> None:
        bucket = self._by_key.get(key)
        if bucket is not None:
            bucket.discard(value)
            if not bucket:
                del self._by_key[key]

    def get(self, key: str) -> set[V]:
        return self._by_key.get(key, _EMPTY)


_EMPTY: set[Any] = set()


class SubscriptionIndex:
    """Which subscribers a policy concerns: policy id/type -> selectors -> subscriber ids."""

    def __init__(self) -> None:
        self._selector_of: dict[str, Selector] = {}
        self._members: dict[Selector, set[str]] = {}
        self._ids: _ExactTable[Selector] = _ExactTable()
        self._types: _ExactTable[Selector] = _ExactTable()
        self._id_prefixes: _PrefixTable[Selector] = _PrefixTable()
        self._type_prefixes: _PrefixTable[Selector] = _PrefixTable()

    def __len__(self) -> int:
        return len(self._selector_of)

    def __contains__(self, subscriber_id: object) -> bool:
        return subscriber_id in self._selector_of

    def selector_of(self, subscriber_id: str) -> Selector | None:
        return self._selector_of.get(subscriber_id)

    def members(self, selector: Selector) -> frozenset[str]:
        return frozenset(self._members.get(selector, ()))

    def put(self, subscriber_id: str, selector: Selector) -> None:
        """Insert a subscriber, or move it to a new selector."""
        if self._selector_of.get(subscriber_id) == selector:
            return
        self.remove(subscriber_id)
        self._selector_of[subscriber_id] = selector
        members = self._members.get(selector)
        if members is None:
            self._members[selector] = {subscriber_id}
            self._link(selector, add=True)
        else:
            members.add(subscriber_id)

    def remove(self, subscriber_id: str) -> None:
        selector = self._selector_of.pop(subscriber_id, None)
        if selector is None:
            return
        members = self._members[selector]
        members.discard(subscriber_id)
        if not members:
            del self._members[selector]
            self._link(selector, add=False)

    def _link(self, selector: Selector, *, add: bool) -> None:
        for table, keys in (
            (self._ids, selector.ids),
            (self._types, selector.types),
            (self._id_prefixes, selector.id_prefixes),
            (self._type_prefixes, selector.type_prefixes),
        ):
            for key in keys:
                if add:
                    table.add(key, selector)
                else:
                    table.discard(key, selector)

    def selectors_matching(self, policy_id: str, policy_type: str) -> set[Selector]:
        """Every selector (with at least one subscriber) that matches this policy."""
        found = set(self._ids.get(policy_id))
        found.update(self._types.get(policy_type))
        for bucket in self._id_prefixes.lookup(policy_id):
            found.update(bucket)
        for bucket in self._type_prefixes.lookup(policy_type):
            found.update(bucket)
        return found


class PolicyIndex(Generic[V]):
    """Deployed policies by id, by type and in sorted order, to answer a selector quickly."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[str, V]] = {}
        self._by_type: dict[str, set[str]] = {}
        self._sorted_ids: list[str] = []
        self._sorted_types: list[str] = []

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, policy_id: object) -> bool:
        return policy_id in self._items

    def get(self, policy_id: str) -> V | None:
        item = self._items.get(policy_id)
        return None if item is None else item[1]

    def type_of(self, policy_id: str) -> str | None:
        item = self._items.get(policy_id)
        return None if item is None else item[0]

    def items(self) -> Iterator[tuple[str, V]]:
        for policy_id, (_, value) in self._items.items():
            yield policy_id, value

    def put(self, policy_id: str, policy_type: str, value: V) -> None:
        self.remove(policy_id)
        self._items[policy_id] = (policy_type, value)
        bisect.insort(self._sorted_ids, policy_id)
        ids = self._by_type.get(policy_type)
        if ids is None:
            self._by_type[policy_type] = {policy_id}
            bisect.insort(self._sorted_types, policy_type)
        else:
            ids.add(policy_id)

    def remove(self, policy_id: str) -> V | None:
        item = self._items.pop(policy_id, None)
        if item is None:
            return None
        policy_type, value = item
        del self._sorted_ids[bisect.bisect_left(self._sorted_ids, policy_id)]
        ids = self._by_type[policy_type]
        ids.discard(policy_id)
        if not ids:
            del self._by_type[policy_type]
            del self._sorted_types[bisect.bisect_left(self._sorted_types, policy_type)]
        return value

    def select(self, selector: Selector) -> set[str]:
        """The ids of every deployed policy that the selector matches."""
        found = {policy_id for policy_id in selector.ids if policy_id in self._items}
        for policy_type in selector.types:
            found.update(self._by_type.get(policy_type, ()))
        for prefix in selector.id_prefixes:
            found.update(_with_prefix(self._sorted_ids, prefix))
        for prefix in selector.type_prefixes:
            for policy_type in _with_prefix(self._sorted_types, prefix):
                found.update(self._by_type[policy_type])
        return found


def _with_prefix(sorted_keys: list[str], prefix: str) -> Iterator[str]:
    start = bisect.bisect_left(sorted_keys, prefix)
    for index in range(start, len(sorted_keys)):
        key = sorted_keys[index]
        if not key.startswith(prefix):
            return
        yield key
