"""The hosts a replica knows, indexed so that a placement looks at a bounded number of them.

Ranking every host for every placement costs O(hosts) per request (10,000 hosts: tens of
milliseconds of one core). The index keeps hosts grouped by free vCPUs, so a placement draws a
small uniform sample among the hosts that have room for its cores (Sparrow's and Omega's
"power of k choices") and runs the usual filters and weighers on that sample only.
"""

from __future__ import annotations

import random

from services.nameserver.scheduling.host_state import HostState


class _Bag:
    """A set with O(1) add, remove and access by position (for uniform sampling)."""

    __slots__ = ("items", "pos")

    def __init__(self) -> None:
        self.items: list[str] = []
        self.pos: dict[str, int] = {}

    def add(self, name: str) -> None:
        if name not in self.pos:
            self.pos[name] = len(self.items)
            self.items.append(name)

    def discard(self, name: str) -> None:
        i = self.pos.pop(name, None)
        if i is None:
            return
        last = self.items.pop()
        if last != name:
            self.items[i] = last
            self.pos[last] = i

    def __len__(self) -> int:
        return len(self.items)


class HostIndex:
    def __init__(self) -> None:
        self._hosts: dict[str, HostState] = {}
        self._by_free: dict[int, _Bag] = {}

    def __len__(self) -> int:
        return len(self._hosts)

    def __contains__(self, name: object) -> bool:
        return name in self._hosts

    def get(self, name: str) -> HostState | None:
        return self._hosts.get(name)

    def states(self) -> list[HostState]:
        return list(self._hosts.values())

    def put(self, host: HostState) -> None:
        old = self._hosts.get(host.name)
        if old is not None and old.free_vcpus != host.free_vcpus:
            self._bag(old.free_vcpus).discard(old.name)
        self._hosts[host.name] = host
        self._bag(host.free_vcpus).add(host.name)

    def remove(self, name: str) -> None:
        old = self._hosts.pop(name, None)
        if old is not None:
            bag = self._by_free.get(old.free_vcpus)
            if bag is not None:
                bag.discard(name)
                if not bag:
                    del self._by_free[old.free_vcpus]

    def count_with(self, min_free_vcpus: int) -> int:
        return sum(len(b) for free, b in self._by_free.items() if free >= min_free_vcpus)

    def sample(self, k: int, min_free_vcpus: int, rng: random.Random) -> list[HostState]:
        """Up to k distinct hosts drawn uniformly among those with at least min_free_vcpus
        free (all of them when there are no more than k)."""
        bags = [b for free, b in self._by_free.items() if free >= min_free_vcpus and b]
        total = sum(len(b) for b in bags)
        if total <= k:
            return [self._hosts[n] for b in bags for n in b.items]
        picks = sorted(rng.sample(range(total), k))
        out: list[HostState] = []
        offset = 0
        it = iter(picks)
        pick = next(it, None)
        for bag in bags:
            end = offset + len(bag)
            while pick is not None and pick < end:
                out.append(self._hosts[bag.items[pick - offset]])
                pick = next(it, None)
            offset = end
        return out

    def _bag(self, free: int) -> _Bag:
        bag = self._by_free.get(free)
        if bag is None:
            bag = self._by_free[free] = _Bag()
        return bag
