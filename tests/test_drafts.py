"""Draft decoding: the stream's previous answers as drafts give, token for token, the answers
decoding without drafts gives (greedy, with the box grammar, pooled prompt K/V and MoD), in
fewer decoder passes; a new stream drops its answers, not their wording."""

import numpy as np
import pytest
import torch

from conftest import random_window
from vts_drive.bench import BenchWindow
from vts_drive.drafts import (
    OTHER_PROMPTS,
    PROBE,
    RECENT_ANSWERS,
    Draft,
    DraftLengths,
    DraftSources,
    DraftStore,
)
from vts_drive.generation import GenerationMeter, decode, pass_groups, prefill
from vts_drive.model.kv_cache import KVCache, LayerKV
from vts_drive.pipeline import Pipeline
from vts_drive.prompt import DESCRIPTION_PROMPT, RISK_PROMPT
from vts_drive.synth.bench_windows import synth_bench_windows
from vts_drive.synth.generate import SynthConfig, generate_dataset
from vts_drive.window import FrameWindow


def continuation(drafts: list[Draft], generated: list[int], limit: int, row: int = 0) -> list[int]:
    """Row `row`'s draft after `generated`, its answer so far, among `drafts` in a window of two rows."""
    sources = DraftSources(drafts, rows=2)
    answers = [[], []]
    answers[row] = generated
    sources.sync(answers)
    return sources.continuation(row, generated, limit)


def test_a_draft_follows_the_earlier_answer_and_goes_on_after_a_changed_token():
    previous = [Draft(0, [1, 2, 3, 4, 5, 6])]
    assert continuation(previous, [1], 10) == [2, 3, 4, 5, 6]
    assert continuation(previous, [1, 2, 3], 2) == [4, 5]
    assert continuation(previous, [1, 2, 9], 10) == [4, 5, 6]  # 9 replaced 3
    assert continuation(previous, [7, 8], 10) == []
    assert continuation(previous, [5], 0) == []
    assert continuation([Draft(0, [1, 5, 3, 1, 6])], [3, 1], 10) == [6]  # the longest end found wins


def test_other_answers_count_from_two_tokens_and_the_stream_answer_wins_ties():
    other = [Draft(1, [7, 1, 2])]  # an answer to the other prompt
    assert continuation(other, [1], 10) == []
    assert continuation(other, [7, 1], 10) == [2]
    assert continuation([Draft(None, [7, 1, 2])], [7, 1], 10) == [2]  # a prompt not asked now
    # the row's own answer so far: a phrase it repeats
    assert continuation([], [4, 5, 6, 4, 5], 10) == [6, 4, 5]
    # equally long matches: the first draft (the stream's previous answer) is followed
    assert continuation([Draft(0, [1, 2, 3]), Draft(0, [1, 2, 8])], [1, 2], 10) == [3]
    # this window's other row: found once it is indexed
    sources = DraftSources([], rows=2)
    sources.sync([[9, 8, 7, 6], [3]])
    assert sources.continuation(1, [3, 9, 8], 10) == [7, 6]


def test_draft_lengths_follow_what_drafts_keep():
    lengths = DraftLengths(2, 40)
    assert lengths.limit(0) == 40
    lengths.verified(0, 10, 6)  # rejected after 6: the next draft probes with 6
    assert lengths.limit(0) == 6 and lengths.limit(1) == 40
    lengths.verified(0, 6, 6)  # accepted in full: doubled
    assert lengths.limit(0) == 12
    lengths.verified(0, 12, 0)  # rejected at once: PROBE tokens still ride along
    assert lengths.limit(0) == PROBE
    lengths.verified(1, 0, 0)  # fed no draft: nothing learnt
    assert lengths.limit(1) == 40


def window_at(cameras: list[str], newest_ns: int) -> FrameWindow:
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    return FrameWindow(
        cameras, [[image, image] for _ in cameras], [[newest_ns - 1, newest_ns] for _ in cameras]
    )


def test_stream_answers_belong_to_their_stream_and_recent_answers_stay_as_wording():
    store = DraftStore()
    store.keep(window_at(["front"], 10), ["p", "q"], [[1, 2], [3]])
    # the same window again: each asked prompt's stream answer first, then recent answers of any prompt
    assert store.drafts(window_at(["front"], 10), ["q", "new"]) == [Draft(0, [3]), Draft(None, [1, 2])]
    assert store.drafts(window_at(["front"], 20), ["p"])[0] == Draft(0, [1, 2])  # the next window
    assert store.drafts(window_at(["front"], 20), ["p", "p"])[:2] == [Draft(0, [1, 2]), Draft(1, [1, 2])]
    store.keep(window_at(["front"], 20), ["p"], [[4]])
    # the stream answer is not repeated among the recent ones; the older answer is
    assert store.drafts(window_at(["front"], 30), ["p"]) == [
        Draft(0, [4]),
        Draft(0, [1, 2]),
        Draft(None, [3]),
    ]
    # other cameras: a new stream, no stream answer, the recent answers as wording
    assert store.drafts(window_at(["front", "rear"], 40), ["p"]) == [
        Draft(0, [4]),
        Draft(0, [1, 2]),
        Draft(None, [3]),
    ]
    assert not store.in_stream
    store.keep(window_at(["front"], 50), ["p"], [[5]])
    assert store.drafts(window_at(["front"], 5), ["p"])[0] == Draft(0, [5])  # stamps went back: recent only
    assert not store.in_stream
    for answer in range(10, 10 + RECENT_ANSWERS + 2):
        store.keep(window_at(["front"], answer), ["p"], [[answer]])
    assert len(store.recent["p"]) == RECENT_ANSWERS and store.recent["p"][0] == [answer]
    store.clear()
    assert not store.in_stream and store.recent
    # many free-form prompts: a window drafts from the newest answers of the latest OTHER_PROMPTS only
    prompts = [f"question {number}" for number in range(OTHER_PROMPTS + 8)]
    store.keep(window_at(["front"], 100), prompts, [[number] for number in range(len(prompts))])
    wording = store.drafts(window_at(["front"], 110), ["new"])
    assert [draft.tokens for draft in wording] == [[number] for number in reversed(range(8, len(prompts)))]


def test_pass_groups_trade_padding_for_passes():
    assert pass_groups([1, 1, 1]) == [[0, 1, 2]]  # no drafts: one pass
    assert pass_groups([2, 40, 1, 38]) == [[1, 3], [0, 2]]
    assert sorted(row for group in pass_groups([5, 9, 1, 30, 2, 2]) for row in group) == list(range(6))


def test_rejected_entries_leave_the_cache_and_rows_join_again():
    cache = KVCache(1)
    keys = torch.arange(2 * 5, dtype=torch.float).view(2, 1, 5, 1)
    positions = torch.tensor([[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]])
    cache.layers[0] = LayerKV(keys, keys, positions, torch.tensor([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]]).bool())
    cache.keep_new(torch.tensor([1, 2]), 3)  # of the last 3 entries, row 0 keeps 1, row 1 keeps 2
    kv = cache.layers[0]
    assert kv.positions[0, :2].tolist() == [0, 2] and kv.valid[0].tolist() == [True, True, False, False]
    assert kv.positions[1].tolist() == [0, 1, 2, 3] and bool(kv.valid[1].all())
    assert kv.keys[0, 0, :2, 0].tolist() == [0.0, 2.0]
    joined = KVCache.cat_rows([cache.select_rows(torch.tensor([1])), cache.select_rows(torch.tensor([0]))])
    assert torch.equal(joined.layers[0].keys, cache.layers[0].keys.flip(0))


class ForbidAt:
    """A constraint that forbids one token at one step of the answer, as the box grammar forbids
    a coordinate: a draft holding that token there must be rejected."""

    def __init__(self, step: int, token: int) -> None:
        self.step, self.token = step, token

    def allowed(self, generated: list[int], vocab_size: int) -> torch.Tensor | None:
        if len(generated) != self.step:
            return None
        mask = torch.ones(vocab_size, dtype=torch.bool)
        mask[self.token] = False
        return mask


def test_any_drafts_give_the_answers_of_greedy_decoding(tiny_model_dir):
    """Drafts that agree, agree in part, run past max_new_tokens, are noise or are forbidden by
    a constraint: the answers never change, and agreeing drafts take fewer passes."""
    pipeline = Pipeline.load(str(tiny_model_dir), {"max_new_tokens": 10})
    decoder = pipeline.decoder
    window = random_window(seed=4)
    tokens, saliency = pipeline.encode_window(window)
    context = pipeline.prompts.context(
        pipeline.select_tokens(window, tokens, saliency, None), pipeline.device
    )
    prompts = [DESCRIPTION_PROMPT, RISK_PROMPT, "Why?", "What should the ego car do?"]
    suffixes = [pipeline.prompts.question_ids(text) for text in prompts]

    def answers(drafts=None, constraints=None):
        """Greedy answers with `drafts` (per prompt: token ids) as the prompts' earlier answers."""
        meter = GenerationMeter(decoder.config)
        earlier = None if drafts is None else [Draft(row, tokens) for row, tokens in enumerate(drafts)]
        with torch.no_grad():
            state = prefill(decoder, context, suffixes, pipeline.pad_id)
            return decode(decoder, state, pipeline.stop_ids, 10, constraints, meter, earlier), meter

    expected, plain = answers()
    assert any(len(answer) > 3 for answer in expected)
    rng = np.random.default_rng(0)
    vocab = decoder.config.vocab_size
    cases = {
        "the answers": expected,
        "a changed token": [a[:2] + [(a[2] + 1) % vocab] + a[3:] if len(a) > 3 else a for a in expected],
        "too long": [a + a for a in expected],
        "noise": [rng.integers(0, vocab, 12).tolist() for _ in expected],
        "none": [[] for _ in expected],
    }
    for name, drafts in cases.items():
        got, meter = answers(drafts)
        assert got == expected, name
        assert meter.accepted <= meter.drafted
    same, meter = answers(expected)
    assert meter.decode_steps < plain.decode_steps and meter.accepted > 0
    # a constraint forbids the token the unconstrained answer has at step 2: the draft holding it is rejected
    row = max(range(len(expected)), key=lambda r: len(expected[r]))
    constraints = [None] * len(prompts)
    constraints[row] = ForbidAt(2, expected[row][2])
    constrained, _ = answers(constraints=constraints)
    assert constrained[row][:2] == expected[row][:2] and constrained[row][2] != expected[row][2]
    assert answers(expected, constraints)[0] == constrained


@pytest.fixture(scope="module")
def synth_stream(tmp_path_factory) -> list[BenchWindow]:
    """Two synthdrive scenes of 6 frames, 3 windows each at stride 1: two streams."""
    root = tmp_path_factory.mktemp("draft_synth")
    generate_dataset(root, SynthConfig(scenes=2, seed=11, frames=6, formats=("synth",)))
    return synth_bench_windows(root, ["front", "front_left", "front_right"], 4, 1, 6)


@pytest.mark.parametrize("mode", ["vts+mod", "dense"])
def test_a_stream_decodes_the_same_answers_with_drafts_in_fewer_passes(synth_stream, mode):
    """The shipped model over two streams: every window answers as without drafts, the box
    grammar on; later windows of a stream accept drafts, and decoding takes fewer passes."""
    drafting = Pipeline.load("synthdrive-tiny", {"mode": mode})
    plain = Pipeline.load("synthdrive-tiny", {"mode": mode, "draft": False})
    assert drafting.box_constraint is not None
    accepted, steps, plain_steps = [], 0, 0
    for item in synth_stream:
        prompts = [DESCRIPTION_PROMPT, RISK_PROMPT, *item.questions]
        meter, plain_meter = (GenerationMeter(drafting.model.config.text_config) for _ in range(2))
        got = drafting.answer(item.window, prompts, meter)
        assert got.answers == plain.answer(item.window, prompts, plain_meter).answers
        accepted.append(meter.accepted)
        steps, plain_steps = steps + meter.decode_steps, plain_steps + plain_meter.decode_steps
    assert all(count > 0 for count in accepted[1:3] + accepted[4:])  # from each stream's second window
    assert steps < plain_steps
    drafting.new_stream()  # the stream's answers go, their wording stays
    assert not drafting.drafts.in_stream and not drafting.frame_cache.frames and drafting.drafts.recent
    drafting.cold_start()  # as a fresh process: what a warm-up window left is gone too
    assert not drafting.drafts.recent
