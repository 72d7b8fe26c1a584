"""A ragged batch: rows that join and leave while the others decode, one forward pass per step.

The batch engine (``runtime/engine.py``) keeps one row per running execution. Each row is a
``Sequence`` its execution writes into (prompt text, chosen and forced tokens); ``logits(rows)`` feeds
every row's new tokens and returns the requested rows' next-token logits.

``LocalRagged`` keeps every row's KV in one transformers ``DynamicCache`` of shape [slots, heads,
columns, dim] with a [slots, columns] attention mask: a row's tokens sit in the columns its mask marks,
and position ids count the row's own tokens, so where a row's columns are (and what padding lies
between them) changes nothing in its attention or its RoPE positions. A step feeds each row's few new
tokens (a chosen token, a short forced run) right-aligned in one [slots, width] input. A row that joins,
or has many new tokens (the prompt text after a hole), is first computed alone on its own KV (its prompt
start taken from the prefix cache) and then placed right-aligned in a free slot: a long prompt never
makes every other row compute padding. A row that leaves frees its slot for the next; the cache is
compacted when most slots are free or most columns are padding.

Why not transformers' continuous batching (``generate_batch`` / paged cache): its requests are a
prompt then a generation, sampled inside its runner with one set of logits processors; a query row
needs its own mask from its own matcher at every step, text appended between holes, and truncation
(a dropped stop phrase), none of which it exposes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .base import Sequence
from .prefix_cache import PrefixCache

SOLO = 24
"""A row with more new tokens than this is computed alone, then placed back (see the module doc)."""


class RaggedRow(Sequence):
    """One row of a ragged batch, as a Sequence."""

    def __init__(self, batch: Ragged):
        super().__init__()
        self.batch = batch
        self.fed = 0  # how many of ids the batch has computed
        self.slot: int | None = None  # its row in the KV cache (local models)
        self.last: np.ndarray | None = None  # the logits after ids[:fed], when fed == len(ids)
        self.keep = 0  # how many of its last positions' logits the next pass keeps (scored tokens)
        self.kept: Any = None  # those logits, [keep, vocab] on the device

    def logits(self) -> np.ndarray:
        """This row alone (a nested query decoded in place asks so); the engine asks for all rows."""
        return self.batch.logits([self])[0]

    def truncate(self, n: int) -> None:
        self.batch.truncate(self, n)

    def fork(self) -> RaggedRow:
        return self.batch.fork(self)


class Ragged(ABC):
    """What the batch engine needs of a backend: rows that join (``add``), are copied (``fork``: a
    beam's child) and leave (``remove``)."""

    backend: Any  # the Backend that made it

    def add(self) -> RaggedRow:
        return RaggedRow(self)

    def fork(self, row: RaggedRow) -> RaggedRow:
        """A new row with ``row``'s ids and what the batch computed of them (a local model copies its
        KV row): a beam's child goes on from its parent without computing its prompt again."""
        child = RaggedRow(self)
        child.ids, child.fed, child.last = list(row.ids), row.fed, row.last
        return child

    def logits(self, rows: list[RaggedRow]) -> np.ndarray:
        """[len(rows), vocab] float32: each row's next-token logits after all its ids."""
        return self.scored_logits(rows, [[] for _ in rows])[0]

    @abstractmethod
    def scored_logits(
        self, rows: list[RaggedRow], positions: list[list[int]]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """``logits(rows)``, and the log-probabilities of the tokens at ``positions[r]`` of each row r,
        all appended since its last logits: tokens a beam appended without a choice (forced by the
        grammar), whose probabilities still count in its score. The same forward pass gives both."""

    def score(self, rows: list[RaggedRow], continuations: list[list[list[int]]]) -> list[list[np.ndarray]]:
        """For each row, the log-probability of each token of each of its continuations after its ids
        (as ``Backend.score``): whole-value choices of every row deciding one, asked after ``logits``."""
        return [self.backend.score(list(r.ids), c) for r, c in zip(rows, continuations, strict=True)]

    def truncate(self, row: RaggedRow, n: int) -> None:
        del row.ids[n:]
        row.fed = min(row.fed, n)
        row.last = None

    def remove(self, row: RaggedRow) -> None:
        return None

    def room(self, rows: int) -> bool:
        """Whether ``rows`` rows in all (those held and those to join) fit the KV memory bound."""
        return True

    def prefetch(self) -> None:
        """Launch the next forward pass (an asynchronous device); ``logits`` waits for it."""
        return None

    def stats(self) -> dict[str, Any]:
        return {}


class LocalRagged(Ragged):
    """The ragged batch of a transformers model (see the module doc)."""

    def __init__(self, backend: Any, *, kv_tokens: int, prefix_cache: PrefixCache | None):
        # backend: the LocalBackend that made it (local.py imports this module, not the reverse)
        self.backend = backend
        self.torch = backend.torch
        self.kv_tokens = kv_tokens  # bound on slots * columns of the KV cache
        self.prefix = prefix_cache
        self.slots: list[RaggedRow | None] = []
        self.cache: Any = None
        self.mask = self.torch.zeros((0, 0), dtype=self.torch.long, device=backend.device)
        self._launched: tuple[Any, list[RaggedRow]] | None = None
        self.counts = {
            "forwards": 0,
            "solo": 0,
            "solo_passes": 0,
            "compactions": 0,
            "fed_tokens": 0,
            "max_slots": 0,
            "score_passes": 0,
        }

    # -- rows ---------------------------------------------------------------------------------------

    def remove(self, row: RaggedRow) -> None:
        with self.torch.inference_mode():  # the cache and mask are inference tensors
            self._remove(row)

    def fork(self, row: RaggedRow) -> RaggedRow:
        """The child takes a free slot holding a copy of its parent's KV and mask (the same columns)."""
        with self.torch.inference_mode():
            self._sync()
            child = super().fork(row)
            if row.slot is not None:
                slot = self._free_slot()
                for la in self.cache.layers:
                    la.keys[slot] = la.keys[row.slot]
                    la.values[slot] = la.values[row.slot]
                self.mask[slot] = self.mask[row.slot]
                self.slots[slot] = child
                child.slot = slot
            return child

    def _remove(self, row: RaggedRow) -> None:
        self._sync()
        if row.slot is not None:
            self.slots[row.slot] = None
            self.mask[row.slot] = 0
            row.slot = None

    def truncate(self, row: RaggedRow, n: int) -> None:
        if n >= len(row.ids):
            return
        del row.ids[n:]
        if row.fed >= n:  # the logits after ids[:n] are gone: feed its last token again
            with self.torch.inference_mode():
                self._sync()
                self._unfeed(row, max(n - 1, 0))

    def _unfeed(self, row: RaggedRow, n: int) -> None:
        if row.slot is not None:
            cols = self.mask[row.slot].nonzero()[:, 0]
            self.mask[row.slot, cols[n:]] = 0
        row.fed = n
        row.last = None

    def room(self, rows: int) -> bool:
        """At the batch's present width (its columns): rows that join are placed right-aligned in it."""
        return rows * self.mask.shape[1] <= self.kv_tokens

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counts)
        if self.prefix is not None:
            out["prefix_cache"] = self.prefix.stats.to_json()
        return out

    # -- forward passes -----------------------------------------------------------------------------

    def scored_logits(
        self, rows: list[RaggedRow], positions: list[list[int]]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        with self.torch.inference_mode():
            return self._logits(rows, positions)

    def _logits(
        self, rows: list[RaggedRow], positions: list[list[int]]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        self._sync()
        for r in rows:
            if r.fed == len(r.ids) and r.last is None:
                self._unfeed(r, len(r.ids) - 1)
        scored = [(r, at, r.fed, r.last) for r, at in zip(rows, positions, strict=True) if at]
        for r, at, fed, _ in scored:
            if not fed <= min(at) <= max(at) < len(r.ids):
                raise ValueError(f"scored_logits: positions {at} are not all new tokens of their row")
            # the logits predicting its scored tokens (the first new token's are the row's last ones)
            r.keep = len(r.ids) - max(min(at), fed + 1) + 1
        apart = [r for r in rows if r.fed < len(r.ids) and (r.slot is None or len(r.ids) - r.fed > SOLO)]
        for group in _groups(apart):
            for rows_ in self._passes(group):
                self._solo(rows_)
        self._launch(rows)
        self._sync()
        lps = [np.zeros(0) for _ in rows]
        at_row = {id(r): i for i, r in enumerate(rows)}
        for r, at, fed, before in scored:
            pending = r.ids[fed:]
            lps[at_row[id(r)]] = logprobs(self.torch, r.kept, pending, [q - fed for q in at], before)
            r.keep, r.kept = 0, None
        return np.stack([r.last for r in rows]), lps  # type: ignore[misc]

    def score(self, rows: list[RaggedRow], continuations: list[list[list[int]]]) -> list[list[np.ndarray]]:
        """From the rows' KV in the batch: a continuation's first token from the row's logits, the
        rest from one forward pass of every continuation longer than one token, each over a copy of
        its row's KV (the prompt is never computed again)."""
        with self.torch.inference_mode():
            return self._score(rows, continuations)

    def _score(self, rows: list[RaggedRow], continuations: list[list[list[int]]]) -> list[list[np.ndarray]]:
        torch, backend = self.torch, self.backend
        self._sync()
        out: list[list[np.ndarray]] = []
        longer: list[tuple[int, int]] = []  # (row, continuation) of those with more than one token
        for i, (r, conts) in enumerate(zip(rows, continuations, strict=True)):
            assert r.slot is not None and r.fed == len(r.ids) and r.last is not None, "score after logits"
            first = _log_softmax(r.last)
            out.append([np.concatenate([first[c[:1]], np.zeros(len(c) - 1)]) for c in conts])
            longer += [(i, j) for j, c in enumerate(conts) if len(c) > 1]
        if not longer:
            return out
        dev = backend.device
        width = max(len(continuations[i][j]) for i, j in longer) - 1  # the last token is not fed
        inp = torch.zeros((len(longer), width), dtype=torch.long)
        new = torch.zeros((len(longer), width), dtype=torch.long)
        pos = torch.zeros((len(longer), width), dtype=torch.long)
        for n, (i, j) in enumerate(longer):
            fed = continuations[i][j][:-1]
            inp[n, : len(fed)] = torch.tensor(fed)  # left-aligned: the padding after them is never seen
            new[n, : len(fed)] = 1
            pos[n] = torch.arange(rows[i].fed, rows[i].fed + width)
        idx = torch.tensor([rows[i].slot for i, _ in longer], device=dev)
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(
            ddp_cache_data=[
                (la.keys.index_select(0, idx), la.values.index_select(0, idx)) for la in self.cache.layers
            ]
        )
        res = backend.forward(
            width,
            input_ids=inp.to(dev),
            attention_mask=torch.cat([self.mask.index_select(0, idx), new.to(dev)], dim=1),
            position_ids=pos.to(dev),
            cache=cache,
        )
        lps = torch.log_softmax(res.logits[:, :, : backend.vocab_size].float(), dim=-1)
        self.counts["score_passes"] += 1
        for n, (i, j) in enumerate(longer):
            rest = torch.tensor(continuations[i][j][1:], device=dev)
            at = torch.arange(len(rest), device=dev)
            out[i][j][1:] = lps[n, at, rest].double().cpu().numpy()
        return out

    def prefetch(self) -> None:
        if self.backend.overlap:  # on the CPU the pass would run now: nothing to overlap it with
            with self.torch.inference_mode():
                self._sync()
                self._launch()

    def _sync(self) -> None:
        if self._launched is not None:
            dev, rows = self._launched
            self._launched = None
            arr = dev.float().cpu().numpy()
            for i, r in enumerate(rows):
                r.last = arr[i]

    def _launch(self, only: list[RaggedRow] | None = None) -> None:
        """One forward pass over the new tokens of every placed row, or of the rows ``only`` (right-
        aligned, padding masked). ``logits(rows)`` feeds just its rows: a row outside them may hold
        tokens whose log-probabilities its own next call asks for (a beam's forced tokens)."""
        torch = self.torch
        wanted = None if only is None else {id(r) for r in only}

        def pending() -> list[tuple[int, RaggedRow]]:
            return [
                (s, r)
                for s, r in enumerate(self.slots)
                if r is not None and r.fed < len(r.ids) and (wanted is None or id(r) in wanted)
            ]

        todo = pending()
        if not todo:
            return
        self._compact()
        todo = pending()
        width = max(len(r.ids) - r.fed for _, r in todo)
        b = len(self.slots)
        inp = torch.zeros((b, width), dtype=torch.long)
        new = torch.zeros((b, width), dtype=torch.long)
        pos = torch.zeros((b, width), dtype=torch.long)
        for s, r in todo:
            p = r.ids[r.fed :]
            inp[s, width - len(p) :] = torch.tensor(p)
            new[s, width - len(p) :] = 1
            pos[s, width - len(p) :] = torch.arange(r.fed, len(r.ids))
        dev = self.backend.device
        mask = torch.cat([self.mask, new.to(dev)], dim=1)
        keep = max(max(r.keep for _, r in todo), 1)
        out = self.backend.forward(
            keep, input_ids=inp.to(dev), attention_mask=mask, position_ids=pos.to(dev), cache=self.cache
        )
        self.mask = mask
        self.counts["forwards"] += 1
        self.counts["fed_tokens"] += sum(len(r.ids) - r.fed for _, r in todo)
        idx = torch.tensor([s for s, _ in todo], device=dev)
        self._launched = (
            out.logits[:, -1, : self.backend.vocab_size].index_select(0, idx),
            [r for _, r in todo],
        )
        for s, r in todo:
            r.fed = len(r.ids)
            r.last = None
            if r.keep:
                r.kept = out.logits[s, -r.keep :, : self.backend.vocab_size]

    def _passes(self, group: list[RaggedRow]) -> list[list[RaggedRow]]:
        """``group`` split so that a joining row sharing a whole uncached block with another joining row
        computes after it: the first stores the shared prompt (a system prompt, few-shot examples) in
        the prefix cache and the rest find it there, instead of every row of the pass computing it."""
        if self.prefix is None:
            return [group]
        first: list[RaggedRow] = []
        later: list[RaggedRow] = []
        for r in group:
            if r.slot is None:
                cached = self.prefix.cached(r.ids, _reusable(r))
                shared = max((_common(r.ids, f.ids) for f in first if f.slot is None), default=0)
                if shared - cached >= self.prefix.block:
                    later.append(r)
                    continue
            first.append(r)
        return [first, later] if later else [first]

    def _solo(self, rows: list[RaggedRow]) -> None:
        """Compute ``rows``' new tokens apart from the batch, in one forward pass, each on its own KV
        (from its slot, or the prefix cache for a row that joins), then place each in a slot. Rows
        that join together (a batch filling up) share the pass, as a batched prefill does; their past
        KV sits right-aligned in ``past`` columns and their new tokens right-aligned after it."""
        torch, backend = self.torch, self.backend
        from transformers.cache_utils import DynamicCache

        self.counts["solo"] += len(rows)
        self.counts["solo_passes"] += 1
        joined = [r.slot is None for r in rows]  # rows that join: their prompt goes to the prefix cache
        starts, pasts = [], []
        for row in rows:
            start, layers = 0, None
            if row.slot is not None:
                cols = self.mask[row.slot].nonzero()[:, 0]
                start = row.fed
                layers = [
                    (
                        la.keys[row.slot : row.slot + 1][:, :, cols],
                        la.values[row.slot : row.slot + 1][:, :, cols],
                    )
                    for la in self.cache.layers
                ]
                self._remove(row)
            elif self.prefix is not None:
                blocks = self.prefix.lookup(row.ids, _reusable(row))
                if blocks:
                    start = len(blocks) * self.prefix.block
                    kv = torch.cat(blocks, dim=3)  # [layers, 2, heads, tokens, dim]
                    layers = [(kv[i, 0][None], kv[i, 1][None]) for i in range(kv.shape[0])]
            starts.append(start)
            pasts.append(layers)
        n, dev = len(rows), backend.device
        past = max(starts)
        width = max(len(r.ids) - s for r, s in zip(rows, starts, strict=True))
        inp = torch.zeros((n, width), dtype=torch.long)
        pos = torch.zeros((n, width), dtype=torch.long)
        mask = torch.zeros((n, past + width), dtype=torch.long)
        for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
            new = row.ids[start:]
            inp[i, width - len(new) :] = torch.tensor(new)
            pos[i, width - len(new) :] = torch.arange(start, len(row.ids))
            mask[i, past - start : past] = 1
            mask[i, past + width - len(new) :] = 1
        cache = DynamicCache(ddp_cache_data=_stack_right(torch, pasts, past)) if past else None
        out = backend.forward(
            max(max(r.keep for r in rows), 1),
            input_ids=inp.to(dev),
            attention_mask=mask.to(dev) if n > 1 else None,  # one row alone: as before, no padding
            position_ids=pos.to(dev),
            cache=cache,
        )
        self.counts["fed_tokens"] += sum(len(r.ids) - s for r, s in zip(rows, starts, strict=True))
        cache = out.past_key_values if getattr(out, "cache", None) is None else out.cache
        last = out.logits[:, -1, : backend.vocab_size].float().cpu().numpy()
        for i, row in enumerate(rows):
            cols = mask[i].nonzero()[:, 0].to(dev) if n > 1 else None
            keys = [_row_kv(la.keys, i, cols) for la in cache.layers]
            values = [_row_kv(la.values, i, cols) for la in cache.layers]
            if self.prefix is not None and joined[i]:
                self.prefix.insert(
                    row.ids,
                    lambda a, z, keys=keys, values=values: torch.stack(
                        [torch.stack([k[0, :, a:z], v[0, :, a:z]]) for k, v in zip(keys, values, strict=True)]
                    ),
                )
            row.fed = len(row.ids)
            row.last = last[i]
            if row.keep:
                row.kept = out.logits[i, -row.keep :, : backend.vocab_size]
            self._place(row, keys, values)

    def _place(self, row: RaggedRow, keys: list[Any], values: list[Any]) -> None:
        """Put a row's KV ([1, heads, n, dim] per layer) right-aligned into a free slot."""
        torch = self.torch
        n = keys[0].shape[2]
        if self.cache is None:
            from transformers.cache_utils import DynamicCache

            self.cache = DynamicCache(ddp_cache_data=list(zip(keys, values, strict=True)))
            self.mask = torch.ones((1, n), dtype=torch.long, device=self.backend.device)
            self.slots = [row]
            row.slot = 0
            return
        cols = self.mask.shape[1]
        if n > cols:  # widen everyone on the left
            for la in self.cache.layers:
                la.keys = _pad(torch, la.keys, n - cols, dim=2)
                la.values = _pad(torch, la.values, n - cols, dim=2)
            self.mask = _pad(torch, self.mask, n - cols, dim=1)
            cols = n
        slot = self._free_slot()
        for la, k, v in zip(self.cache.layers, keys, values, strict=True):
            la.keys[slot].zero_()  # a free slot may hold a dead row's garbage (even NaN): masked or not
            la.values[slot].zero_()
            la.keys[slot, :, cols - n :] = k[0]
            la.values[slot, :, cols - n :] = v[0]
        self.mask[slot] = 0
        self.mask[slot, cols - n :] = 1
        self.slots[slot] = row
        row.slot = slot

    def _free_slot(self) -> int:
        """A slot no row holds, the cache grown by one when there is none."""
        torch = self.torch
        slot = next((s for s, r in enumerate(self.slots) if r is None), None)
        if slot is None:
            slot = len(self.slots)
            self.slots.append(None)
            for la in self.cache.layers:
                la.keys = _pad(torch, la.keys, 1, dim=0, end=True)
                la.values = _pad(torch, la.values, 1, dim=0, end=True)
            self.mask = _pad(torch, self.mask, 1, dim=0, end=True)
            self.counts["max_slots"] = max(self.counts["max_slots"], len(self.slots))
        return slot

    def _compact(self) -> None:
        """Drop free slots when they are most of the batch, and columns no row uses when they are a
        quarter of the cache: both cost a copy of the cache, as one step's own growth does."""
        torch = self.torch
        live = [s for s, r in enumerate(self.slots) if r is not None]
        used = self.mask[live].any(dim=0) if live else None
        drop_slots = 2 * len(live) < len(self.slots)
        drop_cols = used is not None and 4 * int((~used).sum()) > used.numel()
        if not (drop_slots or drop_cols):
            return
        self.counts["compactions"] += 1
        rows = torch.tensor(live if drop_slots else list(range(len(self.slots))), device=self.backend.device)
        cols = used.nonzero()[:, 0] if drop_cols and used is not None else None
        for la in self.cache.layers:
            la.keys, la.values = _take(la.keys, rows, cols), _take(la.values, rows, cols)
        self.mask = _take(self.mask, rows, cols, col_dim=1)
        if drop_slots:
            self.slots = [self.slots[s] for s in live]
            for s, r in enumerate(self.slots):
                assert r is not None
                r.slot = s


def _pad(torch: Any, x: Any, n: int, *, dim: int, end: bool = False) -> Any:
    shape = list(x.shape)
    shape[dim] = n
    z = torch.zeros(shape, dtype=x.dtype, device=x.device)
    return torch.cat([x, z] if end else [z, x], dim=dim)


def _take(x: Any, rows: Any, cols: Any, col_dim: int = 2) -> Any:
    x = x.index_select(0, rows)
    return x.index_select(col_dim, cols) if cols is not None else x


def _groups(rows: list[RaggedRow]) -> list[list[RaggedRow]]:
    """Rows computed apart, in groups that share a forward pass: by count of new tokens, a group
    holding rows at most twice (plus ``SOLO``) as long as its shortest, so padding stays a minor cost."""
    out: list[list[RaggedRow]] = []
    for r in sorted(rows, key=lambda r: len(r.ids) - r.fed):
        if out and len(r.ids) - r.fed <= 2 * (len(out[-1][0].ids) - out[-1][0].fed) + SOLO:
            out[-1].append(r)
        else:
            out.append([r])
    return out


def _reusable(row: RaggedRow) -> int:
    """How many of a joining row's first tokens may come from the prefix cache: all but the last
    (fed for its logits), or all but the positions whose logits its pass must keep (``keep``)."""
    return len(row.ids) - max(row.keep, 1)


def logprobs(
    torch: Any, kept: Any, pending: list[int], rel: list[int], before: np.ndarray | None
) -> np.ndarray:
    """Log-probabilities of ``pending[i]`` for i in ``rel``, tokens just fed in one pass whose last
    ``kept.shape[0]`` positions' logits are ``kept`` (the pass's ``keep``); the first pending token's
    come from ``before``, the row's logits from the previous pass."""
    lps = np.empty(len(rel), dtype=np.float64)
    inside = [(j, i) for j, i in enumerate(rel) if i > 0]
    if inside:
        # Kept position k (of kept.shape[0]) predicts pending token len(pending) - kept.shape[0] + k + 1.
        at = torch.tensor([kept.shape[0] - len(pending) + i - 1 for _, i in inside], device=kept.device)
        rows = torch.log_softmax(kept.index_select(0, at).float(), dim=-1)
        tok = torch.tensor([pending[i] for _, i in inside], device=kept.device).unsqueeze(1)
        lps[[j for j, _ in inside]] = rows.gather(1, tok)[:, 0].double().cpu().numpy()
    for j, i in enumerate(rel):
        if i == 0:
            if before is None:
                raise ValueError("scored_logits: the row has no logits before its new tokens")
            lps[j] = _log_softmax(before)[pending[0]]
    return lps


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max()
    return x - np.log(np.exp(x).sum())


def _common(a: list[int], b: list[int]) -> int:
    """The length of the common start of ``a`` and ``b``."""
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


def _stack_right(torch: Any, pasts: list[Any], width: int) -> list[tuple[Any, Any]]:
    """Per layer, the rows' past (keys, values) ([1, heads, n, dim] each, or None for none) stacked
    into [rows, heads, width, dim], each right-aligned (zeros on the left, masked out)."""
    some = next(p for p in pasts if p is not None)
    out = []
    for li, (k0, _) in enumerate(some):
        shape = (len(pasts), k0.shape[1], width, k0.shape[3])
        keys = torch.zeros(shape, dtype=k0.dtype, device=k0.device)
        values = torch.zeros(shape, dtype=k0.dtype, device=k0.device)
        for i, p in enumerate(pasts):
            if p is not None:
                k, v = p[li]
                keys[i, :, width - k.shape[2] :] = k[0]
                values[i, :, width - v.shape[2] :] = v[0]
        out.append((keys, values))
    return out


def _row_kv(x: Any, i: int, cols: Any) -> Any:
    """Row ``i``'s KV of a forward pass ([1, heads, n, dim]), only its ``cols`` (None: all)."""
    x = x[i : i + 1]
    return x.index_select(2, cols) if cols is not None else x
