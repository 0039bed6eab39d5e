"""The real-dimension bench's tokenizer counts the pipeline's prompt text as Qwen2's does.

The Qwen2 counts below were measured with Qwen2's own vocabulary (151,643 byte-level BPE
tokens) by scripts/qwen2_token_counts.py; they are facts about that tokenizer, recorded here
because it cannot be downloaded in tests.
"""

from vts_drive.model.architectures import prompt_corpus
from vts_drive.model.small import train_tokenizer
from vts_drive.prompt import DESCRIPTION_PROMPT, END_OF_TURN, RISK_PROMPT, SYSTEM_PROMPT
from vts_drive.synth.truth import QUESTIONS, TEMPORAL_QUESTIONS

CAMERAS = ["front", "front_left", "front_right"]
FRAMES = 4
# Qwen2 tokens of the text of a window of CAMERAS x FRAMES asked every synthdrive prompt
QWEN2_WINDOW_TEXT_TOKENS = 389
QWEN2_SUFFIX_TOKENS = {DESCRIPTION_PROMPT: 10, RISK_PROMPT: 67, QUESTIONS["action"]: 12}


def window_text() -> list[str]:
    """The text pieces of a window's prompts, as PromptBuilder tokenizes them one by one."""
    pieces = [f"<|im_start|>system\n{SYSTEM_PROMPT}{END_OF_TURN}\n<|im_start|>user\n"]
    for camera in CAMERAS:
        pieces.append(f"camera {camera}:\n")
        for age in reversed(range(FRAMES)):
            pieces += [f"frame {age}:", "\n"]
    prompts = [DESCRIPTION_PROMPT, RISK_PROMPT, *QUESTIONS.values(), *TEMPORAL_QUESTIONS.values()]
    return pieces + [suffix(prompt) for prompt in prompts]


def suffix(prompt: str) -> str:
    return f"{prompt}{END_OF_TURN}\n<|im_start|>assistant\n"


def count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def test_prompt_tokenizer_counts_within_ten_percent_of_qwen2():
    tokenizer = train_tokenizer(prompt_corpus() * 8, vocab_size=1000, qwen2_split=True)
    total = sum(count(tokenizer, piece) for piece in window_text())
    assert abs(total - QWEN2_WINDOW_TEXT_TOKENS) <= 0.1 * QWEN2_WINDOW_TEXT_TOKENS, total
    for prompt, qwen2 in QWEN2_SUFFIX_TOKENS.items():
        assert abs(count(tokenizer, suffix(prompt)) - qwen2) <= max(1, 0.1 * qwen2), prompt


def test_a_character_level_vocabulary_would_fail_the_check():
    """The check can fail: a vocabulary too small to hold words counts far more tokens."""
    tokenizer = train_tokenizer(prompt_corpus() * 8, vocab_size=300, qwen2_split=True)
    total = sum(count(tokenizer, piece) for piece in window_text())
    assert total > 1.5 * QWEN2_WINDOW_TEXT_TOKENS
