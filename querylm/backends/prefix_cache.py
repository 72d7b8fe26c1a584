"""A prefix cache keyed on token ids: a trie of fixed-size blocks, each holding its block's KV.

Many queries of one run share their start: the chat template's system prompt, few-shot examples, a
document asked several questions. A block's KV depends on every token before it (attention is causal)
and on its positions, which count from the row's start; so a block is reusable exactly when the whole
path of blocks above it matches, which is what a trie keyed on each block's ids checks. Blocks (not
single tokens) keep the trie small and a hit one concatenation of a few tensors.

The cache holds at most ``capacity`` tokens; past that the least recently used leaves go first (a
block is never dropped before the blocks that hang from it, whose KV needs it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Node:
    payload: Any = None
    parent: _Node | None = None
    key: tuple[int, ...] = ()
    children: dict[tuple[int, ...], _Node] = field(default_factory=dict)
    used: int = 0


@dataclass
class PrefixStats:
    lookups: int = 0
    queried_tokens: int = 0
    hit_tokens: int = 0
    stored_tokens: int = 0
    evicted_tokens: int = 0

    @property
    def hit_rate(self) -> float:
        """The share of looked-up prompt tokens whose KV came from the cache."""
        return self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "lookups": self.lookups,
            "queried_tokens": self.queried_tokens,
            "hit_tokens": self.hit_tokens,
            "hit_rate": round(self.hit_rate, 4),
            "stored_tokens": self.stored_tokens,
            "evicted_tokens": self.evicted_tokens,
        }


class PrefixCache:
    """Blocks of ``block`` token ids → their KV (an opaque payload the batch builds and reads)."""

    def __init__(self, capacity: int = 16384, block: int = 16):
        if capacity < 0 or block < 1:
            raise ValueError("PrefixCache needs capacity >= 0 and block >= 1")
        self.capacity = capacity
        self.block = block
        self.root = _Node()
        self.clock = 0
        self.stats = PrefixStats()

    def lookup(self, ids: list[int], limit: int) -> list[Any]:
        """The payloads of the longest run of cached blocks that starts ``ids`` and covers at most
        ``limit`` tokens (a row keeps at least one token to feed, for its logits)."""
        self.clock += 1
        self.stats.lookups += 1
        self.stats.queried_tokens += len(ids)
        node, b = self.root, self.block
        found: list[Any] = []
        while (len(found) + 1) * b <= limit:
            at = len(found) * b
            nxt = node.children.get(tuple(ids[at : at + b]))
            if nxt is None:
                break
            nxt.used = self.clock
            found.append(nxt.payload)
            node = nxt
        self.stats.hit_tokens += len(found) * b
        return found

    def cached(self, ids: list[int], limit: int) -> int:
        """How many tokens of ``ids`` (at most ``limit``) ``lookup`` would find, without counting it as
        a lookup or a use."""
        node, b, n = self.root, self.block, 0
        while n + b <= limit:
            nxt = node.children.get(tuple(ids[n : n + b]))
            if nxt is None:
                break
            node, n = nxt, n + b
        return n

    def insert(self, ids: list[int], payload: Any) -> None:
        """Store the whole blocks of ``ids`` not yet cached; ``payload(start, end)`` gives the KV of
        ``ids[start:end]`` (computed after the blocks before it)."""
        self.clock += 1
        node, b = self.root, self.block
        for at in range(0, len(ids) - b + 1, b):
            key = tuple(ids[at : at + b])
            nxt = node.children.get(key)
            if nxt is None:
                if b > self.capacity:
                    break
                nxt = node.children[key] = _Node(payload(at, at + b), node, key)
                self.stats.stored_tokens += b
            nxt.used = self.clock
            node = nxt
        self._evict()

    def _evict(self) -> None:
        while self.stats.stored_tokens > self.capacity:
            leaves = []
            stack = list(self.root.children.values())
            while stack:
                n = stack.pop()
                if n.children:
                    stack.extend(n.children.values())
                else:
                    leaves.append(n)
            victim = min(leaves, key=lambda n: n.used)
            assert victim.parent is not None
            del victim.parent.children[victim.key]
            self.stats.stored_tokens -= self.block
            self.stats.evicted_tokens += self.block
