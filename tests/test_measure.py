"""PeakMemory charges each block with its own allocations, whatever ran before it."""

import torch

from vts_drive.measure import PeakMemory

MB = 2**20


def test_a_block_is_charged_its_own_peak_after_another_freed_more():
    """Memory the first block freed stays resident (glibc maps a freed chunk of up to 32 MB the first
    time, then keeps chunks of that size on its heap), so a resident-set measure would charge the
    second block nothing: eval's modes after the first read ~0."""
    with PeakMemory("cpu") as first:
        for _ in range(2):
            big = torch.ones(24 * MB, dtype=torch.uint8)
            del big
    with PeakMemory("cpu") as second:
        kept = torch.ones(16 * MB, dtype=torch.uint8)
    del kept
    assert 23 < first.mb < 30
    assert 15 < second.mb < 20
