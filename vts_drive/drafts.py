"""Earlier answers as drafts for decoding the next window of a stream.

Consecutive windows of a stream overlap, and a prompt is mostly answered word for word
as it was one window earlier. Decoding (generation.decode) feeds each row's next token
together with a continuation drafted from earlier answers and keeps the longest prefix
its own greedy picks agree with, so an unchanged answer costs one decoder pass instead
of one per token; the answers are those decoding without drafts gives.

Where a draft comes from (DraftSources.continuation): the place in an earlier answer
where the end of what the row has written recurs, longest first. The prompt's answer in
the stream's previous window comes first; then the prompt's other recent answers, this
window's answers so far, and recent answers to other prompts, from any stream: wording
recurs across prompts and scenes ("... cyclist in view, the traffic light is red"), so
after a changed word, and in the first window of a stream, the draft goes on where the
wording is found again.

The store (DraftStore) holds a few recent answers per prompt regardless of stream, and
which prompts the stream has answered: their newest answer is the stream's. A window with
other cameras, or one older than the window the stream answers came from (stamps went
back: a new recording, a bag played again), drops the stream's claim on them, as does
clear(); the recent answers stay, as wording.
"""

from __future__ import annotations

from dataclasses import dataclass

from vts_drive.window import FrameWindow

MAX_PROMPTS = 256  # prompts whose answers are kept, those used least recently dropped first
RECENT_ANSWERS = 4  # distinct recent answers kept per prompt, across streams
OTHER_PROMPTS = 32  # prompts not asked in a window whose newest answer it drafts from, latest first
# tokens that must be found together in a source other than the row's own prompt's answers: one
# token (a comma, "the") is too weak a cue, and a wrong draft costs its tokens
OTHER_MATCH = 2
LONGEST_MATCH = 16  # tokens of the end of an answer compared: longer agreement changes nothing
# after a rejected draft a row drafts as many tokens as that one kept, and at least PROBE: a few
# tokens more in a pass cost far less than the pass a changed word would otherwise cost
PROBE = 4


@dataclass(frozen=True)
class Draft:
    """An earlier answer decoding may draft from."""

    prompt: int | None  # the index of the prompt it answered among the window's prompts (None: not asked)
    tokens: list[int]


class DraftStore:
    """Each prompt's recent answers in any stream, newest first, and which prompts were answered
    in this stream (their newest answer is the stream's), kept between windows like the frame cache."""

    def __init__(self) -> None:
        self.recent: dict[str, list[list[int]]] = {}  # prompt text -> its distinct answers, newest first
        self.in_stream: set[str] = set()  # prompts answered in this stream
        self.cameras: tuple[str, ...] = ()  # the stream the answers belong to
        self.newest_ns = 0  # the newest frame stamp of the windows answered

    def clear(self) -> None:
        """Forget the stream's answers: the next window starts a new stream."""
        self.in_stream.clear()
        self.cameras, self.newest_ns = (), 0

    def drafts(self, window: FrameWindow, prompts: list[str]) -> list[Draft]:
        """What this window's prompts may draft from: each prompt's last answer in the stream
        first, then their other recent answers, then the newest answers of prompts answered
        lately; a window of another stream first drops the stream's."""
        newest = max(stamps[-1] for stamps in window.stamps_ns)
        if tuple(window.cameras) != self.cameras or newest < self.newest_ns:
            self.clear()
        asked: dict[str, list[int]] = {}  # prompt text -> its indices (a prompt may be asked twice)
        for index, prompt in enumerate(prompts):
            asked.setdefault(prompt, []).append(index)
        drafts = [
            Draft(index, self.recent[prompt][0])
            for index, prompt in enumerate(prompts)
            if prompt in self.in_stream
        ]
        for prompt in asked:  # the asked prompts' other recent answers (the stream's is already first)
            earlier = self.recent.get(prompt, [])[1 if prompt in self.in_stream else 0 :]
            drafts += [Draft(index, answer) for answer in earlier for index in asked[prompt]]
        # then the newest answer of each prompt answered lately but not asked now, as wording
        others = [prompt for prompt in reversed(self.recent) if prompt not in asked][:OTHER_PROMPTS]
        drafts += [Draft(None, self.recent[prompt][0]) for prompt in others]
        return drafts

    def keep(self, window: FrameWindow, prompts: list[str], answers: list[list[int]]) -> None:
        """The answers this window got, the drafts of the next windows."""
        self.cameras = tuple(window.cameras)
        self.newest_ns = max(self.newest_ns, max(stamps[-1] for stamps in window.stamps_ns))
        for prompt, answer in zip(prompts, answers, strict=True):
            recent = [answer] + [other for other in self.recent.pop(prompt, []) if other != answer]
            self.recent[prompt] = recent[:RECENT_ANSWERS]  # moved last: the latest answered
        self.in_stream.update(prompts)
        for prompt in list(self.recent)[: max(0, len(self.recent) - MAX_PROMPTS)]:
            del self.recent[prompt]
        self.in_stream &= self.recent.keys()


class DraftSources:
    """The token sequences one decode drafts from, indexed by token: finding where the end of
    an answer recurs costs that token's occurrences, not a scan of every sequence. Each row's
    answer so far is a source too, extended as it grows (sync)."""

    def __init__(self, drafts: list[Draft], rows: int) -> None:
        self.sequences: list[list[int]] = []
        self.prompts: list[int | None] = []  # the prompt each sequence answers
        self.where: dict[int, list[tuple[int, int]]] = {}  # token -> (sequence, position), in order added
        for draft in drafts:
            self.add(draft.prompt, draft.tokens)
        self.answers = [self.add(None, []) for _ in range(rows)]  # each row's answer so far

    def add(self, prompt: int | None, tokens: list[int]) -> int:
        index = len(self.sequences)
        self.sequences.append([])
        self.prompts.append(prompt)
        self.extend(index, tokens)
        return index

    def extend(self, index: int, tokens: list[int]) -> None:
        sequence = self.sequences[index]
        for token in tokens:
            self.where.setdefault(token, []).append((index, len(sequence)))
            sequence.append(token)

    def sync(self, answers: list[list[int]]) -> None:
        """Index what each row's answer gained since the last sync."""
        for index, answer in zip(self.answers, answers):
            self.extend(index, answer[len(self.sequences[index]) :])

    def continuation(self, row: int, generated: list[int], limit: int) -> list[int]:
        """Up to `limit` tokens that followed, in a source, the longest end of `generated` (the
        row's answer so far) found there: from one token in an answer to the row's own prompt,
        from OTHER_MATCH tokens elsewhere; among equally long ones the first found (the stream's
        previous answer first). When `generated`'s last token is found nowhere, it replaced one
        (a count, a colour, a box coordinate): the draft goes on after the token it replaced.
        [] when neither is found."""
        if limit <= 0 or not generated:
            return []
        found = self.longest_end(row, generated, 0)
        if found is None and len(generated) > 1:
            found = self.longest_end(row, generated[:-1], 1)
        if found is None:
            return []
        sequence, start = found
        return self.sequences[sequence][start : start + limit]

    def longest_end(self, row: int, generated: list[int], skip: int) -> tuple[int, int] | None:
        """(sequence, start): where the longest end of `generated` found in a source, followed by
        `skip` tokens and more, is followed; None when none is long enough."""
        best, found = 0, None
        for sequence, end in self.where.get(generated[-1], ()):
            tokens = self.sequences[sequence]
            if end + 1 + skip >= len(tokens):
                continue  # nothing after it to draft
            length = 1
            while (
                length <= end
                and length < len(generated)
                and length < LONGEST_MATCH
                and tokens[end - length] == generated[-1 - length]
            ):
                length += 1
            needed = 1 if self.prompts[sequence] == row else OTHER_MATCH
            if length >= needed and length > best:
                best, found = length, (sequence, end + 1 + skip)
        return found


class DraftLengths:
    """How many draft tokens each row of one decode may feed next. A row's first draft may be as
    long as its answer can grow; one accepted in full doubles the next, one rejected limits the
    next to the tokens it had accepted (at least PROBE), so a row whose drafts fail probes with
    short ones, which ride in its step's pass instead of costing a pass of their own."""

    def __init__(self, rows: int, longest: int) -> None:
        self.limits = [longest] * rows
        self.longest = longest

    def limit(self, row: int) -> int:
        return self.limits[row]

    def verified(self, row: int, drafted: int, accepted: int) -> None:
        """Row `row` fed `drafted` draft tokens, of which the first `accepted` were kept."""
        if drafted:
            full = accepted == drafted
            self.limits[row] = min(self.longest, 2 * self.limits[row]) if full else max(PROBE, accepted)
