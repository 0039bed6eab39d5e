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

    def select_rows(self, rows: torch.Tensor) -> "KVCache":
        """A cache whose row i is a copy of row rows[i]: one row per prompt of each training
        example (autograd needs the copies; inference shares the prefix with `branch`)."""
        selected = KVCache(len(self.layers))
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
