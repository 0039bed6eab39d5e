"""A KV cache whose layers may hold different numbers of entries.

Each entry carries its own position and a valid flag, and attention masks are
derived from them (a query at position p sees valid keys at positions <= p).
That one rule covers everything the pipeline does to a sequence: padded rows of
a batch, prompts branched off a shared prefix, and mixture-of-depths layers
that store K/V only for the tokens they computed.

Each layer holds two segments: `shared`, a batch-1 segment every row attends to
(the window's visual context after `branch`, never copied per prompt), and
`layers`, the entries of each row (prompt suffixes and generated tokens).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerKV:
    keys: torch.Tensor  # [B, H_kv, S, d], rotary embedding applied
    values: torch.Tensor  # [B, H_kv, S, d]
    positions: torch.Tensor  # [B, S] long
    valid: torch.Tensor  # [B, S] bool


class KVCache:
    def __init__(self, num_layers: int) -> None:
        self.layers: list[LayerKV | None] = [None] * num_layers  # per-row entries
        self.shared: list[LayerKV | None] = [None] * num_layers  # batch 1, seen by every row

    def segments(self, layer: int) -> list[LayerKV]:
        """What a query of this layer attends over: the shared segment, then the row's own."""
        return [kv for kv in (self.shared[layer], self.layers[layer]) if kv is not None]

    def branch(self) -> "KVCache":
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
    def join_rows(caches: list["KVCache"]) -> "KVCache":
        """The rows of caches branched off one prefix, stacked into one cache; shorter rows are
        padded with invalid entries, which no query sees."""
        joined = KVCache(len(caches[0].layers))
        joined.shared = caches[0].shared
        if any(a is not b for cache in caches for a, b in zip(cache.shared, joined.shared)):
            raise ValueError("only caches branched off the same prefix can be joined")
        for index in range(len(joined.layers)):
            parts = [cache.layers[index] for cache in caches]
            width = max(kv.keys.shape[2] for kv in parts)
            joined.layers[index] = LayerKV(
                keys=torch.cat([pad_entries(kv.keys, width, dim=2) for kv in parts]),
                values=torch.cat([pad_entries(kv.values, width, dim=2) for kv in parts]),
                positions=torch.cat([pad_entries(kv.positions, width, dim=1) for kv in parts]),
                valid=torch.cat([pad_entries(kv.valid, width, dim=1) for kv in parts]),
            )
        return joined

    def select_rows(self, rows: torch.Tensor) -> "KVCache":
        """A cache whose row i is a copy of row rows[i], over the same shared prefix: one row
        per prompt of each training example (autograd needs the copies; inference shares the
        prefix with `branch`), or the rows still decoding."""
        selected = KVCache(len(self.layers))
        selected.shared = self.shared
        for index, kv in enumerate(self.layers):
            if kv is not None:
                selected.layers[index] = LayerKV(
                    keys=kv.keys.index_select(0, rows),
                    values=kv.values.index_select(0, rows),
                    positions=kv.positions.index_select(0, rows),
                    valid=kv.valid.index_select(0, rows),
                )
        return selected

    def entries(self, layer: int) -> int:
        """Entries a query of this layer attends over (shared + own)."""
        return sum(kv.keys.shape[2] for kv in self.segments(layer))

    def nbytes(self) -> int:
        """Bytes of keys and values held (what the cache costs in device memory)."""
        held = [kv for kv in self.layers + self.shared if kv is not None]
        return sum(kv.keys.nbytes + kv.values.nbytes for kv in held)


def pad_entries(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Zero-pad `tensor` along `dim` to `width` entries (zero is an invalid flag for `valid`)."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)
