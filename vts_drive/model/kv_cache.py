"""A KV cache whose layers may hold different numbers of entries.

Each entry carries its own position and a valid flag, and attention masks are
derived from them (a query at position p sees valid keys at positions <= p).
That one rule covers everything the pipeline does to a sequence: padded rows of
a batch, prompts branched off a shared prefix, and mixture-of-depths layers
that store K/V only for the tokens they computed.
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
        self.layers: list[LayerKV | None] = [None] * num_layers

    def append(self, layer: int, new: LayerKV) -> LayerKV:
        """Add entries to a layer and return everything that layer now holds."""
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
        """A cache whose row i is a copy of row rows[i]: branches a shared prefix into one
        row per prompt (rows = [0, 0, ...]) or per training example."""
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
        kv = self.layers[layer]
        return 0 if kv is None else kv.keys.shape[2]

    def nbytes(self) -> int:
        """Bytes of keys and values held (what the cache costs in device memory)."""
        return sum(kv.keys.nbytes + kv.values.nbytes for kv in self.layers if kv is not None)
