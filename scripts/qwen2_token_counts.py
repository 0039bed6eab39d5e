"""Qwen2's token counts of a window's prompt text, the figures tests/test_architectures.py records.

    python scripts/qwen2_token_counts.py RANKS

RANKS is Qwen's BPE rank file (`qwen.tiktoken`: one base64 token and its rank per line; Qwen2's
vocabulary is these 151,643 tokens). Counting follows byte-level BPE by rank: text is split
into words by Qwen2's pattern, and each word's bytes are merged pair by pair, lowest rank first.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import regex

from vts_drive.errors import InputError
from vts_drive.model.small import QWEN2_SPLIT
from vts_drive.prompt import DESCRIPTION_PROMPT, END_OF_TURN, RISK_PROMPT, SYSTEM_PROMPT
from vts_drive.synth.truth import QUESTIONS, TEMPORAL_QUESTIONS

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def read_ranks(path: Path) -> dict[bytes, int]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise InputError(f"{path}: cannot read the rank file ({error.strerror})") from None
    ranks = {}
    for number, line in enumerate(lines, 1):
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:
            raise InputError(
                f"{path}:{number}: not a line '<base64 token> <rank>' of a BPE rank file"
            ) from None
    return ranks


def word_tokens(word: bytes, ranks: dict[bytes, int]) -> int:
    parts = [word[i : i + 1] for i in range(len(word))]
    while len(parts) > 1:
        pairs = [(ranks.get(parts[i] + parts[i + 1]), i) for i in range(len(parts) - 1)]
        known = [(rank, i) for rank, i in pairs if rank is not None]
        if not known:
            break
        _, i = min(known)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return len(parts)


def count(text: str, ranks: dict[bytes, int]) -> int:
    special = "(" + "|".join(regex.escape(token) for token in SPECIAL_TOKENS) + ")"
    total = 0
    for chunk in regex.split(special, text):
        if chunk in SPECIAL_TOKENS:
            total += 1
        else:
            total += sum(word_tokens(word.encode(), ranks) for word in regex.findall(QWEN2_SPLIT, chunk))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ranks", type=Path)
    args = parser.parse_args()
    try:
        ranks = read_ranks(args.ranks)
    except InputError as error:
        parser.exit(2, f"error: {error}\n")
    pieces = [f"<|im_start|>system\n{SYSTEM_PROMPT}{END_OF_TURN}\n<|im_start|>user\n"]
    for camera in ("front", "front_left", "front_right"):
        pieces.append(f"camera {camera}:\n")
        for age in (3, 2, 1, 0):
            pieces += [f"frame {age}:", "\n"]
    prompts = [DESCRIPTION_PROMPT, RISK_PROMPT, *QUESTIONS.values(), *TEMPORAL_QUESTIONS.values()]
    suffixes = {prompt: count(f"{prompt}{END_OF_TURN}\n<|im_start|>assistant\n", ranks) for prompt in prompts}
    print(
        f"window of 3 cameras x 4 frames, every prompt: {sum(count(p, ranks) for p in pieces) + sum(suffixes.values())}"
    )
    for prompt, tokens in suffixes.items():
        print(f"{tokens:4d}  {prompt}")


if __name__ == "__main__":
    main()
