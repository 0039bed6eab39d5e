"""The previous window's answers as drafts for decoding the next window of a stream.

Consecutive windows of a stream overlap, and a prompt is mostly answered word for word
as it was one window earlier. Decoding (generation.decode) feeds each row's next token
together with the continuation of that earlier answer and keeps the longest prefix its
own greedy picks agree with, so an unchanged answer costs one decoder pass instead of
one per token; the answers are those decoding without drafts gives. After a changed
word the draft goes on where the answers agree again, or where this window's answers
so far repeat the words just written (draft_continuation).

The store holds the last answer (token ids) given to each prompt text in the stream.
Drafts of another stream would cost verification and save nothing, so a window with
other cameras, or one older than the window the drafts came from (stamps went back: a
new recording, a bag played again), drops them, as does clear().
"""

from __future__ import annotations

from vts_drive.window import FrameWindow

MAX_PROMPTS = 256  # answers kept, the prompts used least recently dropped first (free-form questions)
# tokens of a row's answer that must be found together in a source other than its prompt's
# earlier answer: one token (a comma, "the") is too weak a cue, and a wrong draft costs its tokens
OTHER_MATCH = 2
# a decode stops drafting once this many draft tokens were fed and under GIVE_UP_RATE of them kept:
# drafts that keep failing (answers that change every window) would cost more passes than they save
GIVE_UP_AFTER, GIVE_UP_RATE = 32, 0.2


class DraftStore:
    """Each prompt's last answer in the stream, kept between windows like the frame cache."""

    def __init__(self) -> None:
        self.answers: dict[str, list[int]] = {}  # prompt text -> its last answer, least recent first
        self.cameras: tuple[str, ...] = ()  # the stream the answers belong to
        self.newest_ns = 0  # the newest frame stamp of the windows answered

    def clear(self) -> None:
        """Forget every answer: the next window starts a new stream."""
        self.answers.clear()
        self.cameras, self.newest_ns = (), 0

    def drafts(self, window: FrameWindow, prompts: list[str]) -> list[list[int]]:
        """Each prompt's last answer in this window's stream ([] for a prompt not answered yet);
        a window of another stream first drops every answer held."""
        newest = max(stamps[-1] for stamps in window.stamps_ns)
        if tuple(window.cameras) != self.cameras or newest < self.newest_ns:
            self.clear()
        return [self.answers.get(prompt, []) for prompt in prompts]

    def keep(self, window: FrameWindow, prompts: list[str], answers: list[list[int]]) -> None:
        """The answers this window got, the drafts of the next one."""
        self.cameras = tuple(window.cameras)
        self.newest_ns = max(self.newest_ns, max(stamps[-1] for stamps in window.stamps_ns))
        for prompt, answer in zip(prompts, answers, strict=True):
            self.answers.pop(prompt, None)
            self.answers[prompt] = answer
        for prompt in list(self.answers)[: max(0, len(self.answers) - MAX_PROMPTS)]:
            del self.answers[prompt]


class DraftLengths:
    """How many draft tokens each row of one decode may feed next. A row's first draft may be as
    long as its answer can grow; one accepted in full doubles the next, one rejected limits the
    next to the tokens it had accepted (at least one), so a row whose drafts fail probes with
    short ones, which ride in its step's pass instead of costing a pass of their own. Drafting
    stops for every row once drafts keep failing (GIVE_UP_AFTER, GIVE_UP_RATE)."""

    def __init__(self, rows: int, longest: int) -> None:
        self.limits = [longest] * rows
        self.longest = longest
        self.drafted = self.accepted = 0

    def limit(self, row: int) -> int:
        failing = self.drafted >= GIVE_UP_AFTER and self.accepted < GIVE_UP_RATE * self.drafted
        return 0 if failing else self.limits[row]

    def verified(self, row: int, drafted: int, accepted: int) -> None:
        """Row `row` fed `drafted` draft tokens, of which the first `accepted` were kept."""
        if drafted:
            full = accepted == drafted
            self.limits[row] = min(self.longest, 2 * self.limits[row]) if full else max(1, accepted)
            self.drafted, self.accepted = self.drafted + drafted, self.accepted + accepted


def draft_continuation(sources: list[list[int]], generated: list[int], limit: int) -> list[int]:
    """Up to `limit` tokens that followed, in one of `sources`, the longest end of `generated`
    found there (the first place found among equally long ones). sources[0] is the earlier
    answer to the same prompt: its rest is the draft while the answer repeats it. The others
    (this window's answers so far: an answer repeating itself or another's words) count from
    OTHER_MATCH tokens found together. When `generated`'s last token is found nowhere, it
    replaced one (a count, a colour, a box coordinate): the draft goes on after the token it
    replaced. [] when neither is found."""
    length, index, start = longest_end(sources, generated, 0)
    if not length and len(generated) > 1:
        length, index, start = longest_end(sources, generated[:-1], 1)
    return sources[index][start : start + limit] if length and limit > 0 else []


def longest_end(sources: list[list[int]], generated: list[int], skip: int) -> tuple[int, int, int]:
    """(length, source, start): the longest end of `generated` found in a source followed by
    `skip` tokens and more, and where what follows those starts; length 0 when none is."""
    best, found, start = 0, 0, 0
    for index, source in enumerate(sources):
        end = -1
        while True:  # each place source[end] == generated[-1] with something after it
            try:
                end = source.index(generated[-1], end + 1, len(source) - 1 - skip)
            except ValueError:
                break
            length = 1
            while (
                length <= end and length < len(generated) and source[end - length] == generated[-1 - length]
            ):
                length += 1
            if length > best and (index == 0 or length >= OTHER_MATCH):
                best, found, start = length, index, end + 1 + skip
    return best, found, start
