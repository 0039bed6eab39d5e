"""A KV cache whose layers may hold different numbers of entries.

Each entry carries its own position and a valid flag, and attention masks are
derived from them (a query at position p sees valid keys at positions <= p).
That one rule covers everything the pipeline does to a sequence: padded rows of
a batch, prompts branched off a shared prefix, and mixture-of-depths layers
that store K/V only for the tokens they computed.

Each layer holds two segments: `shared`, batch-1 keys and values every row attends
to (the window's visual context after `branch`, never copied per prompt; after
`pool_rows` also each row's prompt, masked to its row), and `layers`, the
entries of each row (prompt suffixes, then generated tokens).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, replace

import torch


@dataclass
class LayerKV:
    keys: torch.Tensor  # [B, H_kv, S, d], rotary embedding applied
    values: torch.Tensor  # [B, H_kv, S, d]
    positions: torch.Tensor  # [B, S] long
    valid: torch.Tensor  # [B, S] bool ([R, S] in a pooled shared segment: which entries each row sees)


class KVCache:
    def __init__(self, num_layers: int) -> None:
        self.layers: list[LayerKV | None] = [None] * num_layers  # per-row entries
        self.shared: list[LayerKV | None] = [None] * num_layers  # batch 1, seen by every row

    def segments(self, layer: int) -> list[LayerKV]:
        """What a query of this layer attends over: the shared segment, then the row's own."""
        return [kv for kv in (self.shared[layer], self.layers[layer]) if kv is not None]

    def branch(self) -> KVCache:
        """Turn a single-row cache into the shared segment of a cache for any number of rows (no copy)."""
        if any(kv is not None and kv.keys.shape[0] != 1 for kv in self.layers):
            raise ValueError("only a single-row cache can be branched")
        if any(kv is not None for kv in self.shared):
            raise ValueError("this cache is already branched")
        branched = KVCache(len(self.layers))
        branched.shared = list(self.layers)
        return branched

    def append(self, layer: int, new: LayerKV) -> LayerKV:
        """Add entries to a layer's rows and return the rows' entries now held."""
        old = self.layers[layer]
        if old is not None:
            new = LayerKV(
                keys=torch.cat([old.keys, new.keys], dim=2),
                values=torch.cat([old.values, new.values], dim=2),
                positions=torch.cat([old.positions, new.positions], dim=1),
                valid=torch.cat([old.valid, new.valid], dim=1),
            )
        self.layers[layer] = new
        return new

    @staticmethod
    def pool_rows(caches: list[KVCache]) -> KVCache:
        """The rows of caches branched off one prefix, as one cache to decode them together.

        Rows hold prompts of different lengths. Stacked as [rows, entries] they would all be
        padded to the longest; instead each row's valid entries join the shared segment, where
        the valid mask becomes per row [R, S] (the prefix visible to every row, a row's own
        entries to that row alone), so no entry is padding. Tokens decoded later go to the rows'
        own segment as usual. Rows are numbered in the order of `caches`."""
        shared = caches[0].shared
        if any(a is not b for cache in caches for a, b in zip(cache.shared, shared)):
            raise ValueError("only caches branched off the same prefix can be pooled")
        pooled = KVCache(len(shared))
        for index, prefix in enumerate(shared):
            row_entries = [cache.layers[index] for cache in caches]
            if prefix is None or any(kv is None for kv in row_entries):
                raise ValueError("only caches branched off a prefix and prefilled can be pooled")
            keys, values, positions, owners, rows = (
                [prefix.keys[0]],
                [prefix.values[0]],
                [prefix.positions[0]],
                [],
                0,
            )
            for kv in typing.cast(list[LayerKV], row_entries):
                keep = kv.valid  # [P, W]: the row's entries, not its padding
                keys.append(kv.keys.transpose(0, 1)[:, keep])  # [H, n, d]
                values.append(kv.values.transpose(0, 1)[:, keep])
                positions.append(kv.positions[keep])  # [n]
                owners.append(
                    (rows + torch.arange(kv.valid.shape[0], device=keep.device))[:, None].expand_as(keep)[
                        keep
                    ]
                )
                rows += kv.valid.shape[0]
            owner = torch.cat(owners)  # [N]: the row each pooled entry belongs to
            own = owner[None, :] == torch.arange(rows, device=owner.device)[:, None]  # [R, N]
            pooled.shared[index] = LayerKV(
                keys=torch.cat(keys, dim=1)[None],  # [1, H, S + N, d]
                values=torch.cat(values, dim=1)[None],
                positions=torch.cat(positions)[None],  # [1, S + N]
                valid=torch.cat([prefix.valid.expand(rows, -1), own], dim=1),  # [R, S + N]
            )
        return pooled

    def select_rows(self, rows: torch.Tensor) -> KVCache:
        """A cache whose row i is a copy of row rows[i], over the same shared prefix: one row
        per prompt of each training example (autograd needs the copies; inference shares the
        prefix with `branch`), or the rows still decoding."""
        selected = KVCache(len(self.layers))
        selected.shared = [  # a per-row valid mask (pooled rows) follows its rows; one row's is everyone's
            kv if kv is None or kv.valid.shape[0] == 1 else replace(kv, valid=kv.valid.index_select(0, rows))
            for kv in self.shared
        ]
        for index, kv in enumerate(self.layers):
            if kv is not None:
                selected.layers[index] = LayerKV(
                    keys=kv.keys.index_select(0, rows),
                    values=kv.values.index_select(0, rows),
                    positions=kv.positions.index_select(0, rows),
                    valid=kv.valid.index_select(0, rows),
                )
        return selected

    @staticmethod
    def cat_rows(caches: list[KVCache]) -> KVCache:
        """The rows of caches selected from one cache (select_rows) as one cache again, in the
        order given: each layer's own entries right-padded with invalid entries to the widest."""
        joined = KVCache(len(caches[0].layers))
        for index in range(len(joined.layers)):
            first = caches[0].shared[index]
            if first is not None:
                shared = [cache.shared[index] for cache in caches]
                if any(kv is None or kv.keys is not first.keys for kv in shared):
                    raise ValueError("only rows selected from one cache can be joined")
                per_row = typing.cast(list[LayerKV], shared)
                joined.shared[index] = (
                    first
                    if all(kv is first for kv in per_row)  # one mask for every row, kept by select_rows
                    else replace(first, valid=torch.cat([kv.valid for kv in per_row]))
                )
            own = [cache.layers[index] for cache in caches]
            if any(kv is None for kv in own):
                continue
            rows = typing.cast(list[LayerKV], own)
            width = max(kv.keys.shape[2] for kv in rows)
            joined.layers[index] = LayerKV(
                keys=torch.cat([widen(kv.keys, 2, width) for kv in rows]),
                values=torch.cat([widen(kv.values, 2, width) for kv in rows]),
                positions=torch.cat([widen(kv.positions, 1, width) for kv in rows]),
                valid=torch.cat([widen(kv.valid, 1, width) for kv in rows]),  # the padding is invalid
            )
        return joined

    def keep_new(self, kept: torch.Tensor, width: int) -> None:
        """Of the last `width` entries of each row (the tokens of one decode step), keep the
        first kept[row] ([B]: a step's token and the draft tokens verified after it). The rest
        are dropped, and each row's entries moved to the front, in order (attention follows
        their positions, not their places), so no row holds more than its own tokens: no
        later query sees a rejected entry, and none costs memory or time."""
        before: torch.Tensor | None = None  # the layer before's valid mask, and what it became
        for index, kv in enumerate(self.layers):
            if kv is None:
                continue
            if before is None or not torch.equal(kv.valid, before):  # decoding gives every layer the same
                before, columns = kv.valid, torch.arange(width, device=kv.valid.device)  # [W]
                valid = kv.valid.clone()
                valid[:, -width:] &= columns[None, :] < kept.to(valid.device)[:, None]  # [B, W]
                held = int(valid.sum(dim=1).max())  # entries of the fullest row
                order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices[:, :held]  # [B, n]
            gather = order[:, None, :, None].expand(-1, kv.keys.shape[1], -1, kv.keys.shape[3])
            self.layers[index] = LayerKV(
                keys=kv.keys.gather(2, gather),
                values=kv.values.gather(2, gather),
                positions=kv.positions.gather(1, order),
                valid=valid.gather(1, order),
            )

    def entries(self, layer: int) -> int:
        """Entries a query of this layer attends over (shared + own)."""
        return sum(kv.keys.shape[2] for kv in self.segments(layer))

    def nbytes(self) -> int:
        """Bytes of keys and values held (what the cache costs in device memory)."""
        held = [kv for kv in self.layers + self.shared if kv is not None]
        return sum(kv.keys.nbytes + kv.values.nbytes for kv in held)


def widen(tensor: torch.Tensor, axis: int, width: int) -> torch.Tensor:
    """`tensor` with zeros (False) appended along `axis` up to `width`."""
    shape = list(tensor.shape)
    shape[axis] = width - shape[axis]
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=axis)
