"""The baseline a user of plain transformers would write: per window, encode every frame,
then one full `generate` per prompt (the visual context prefilled again for each)."""
from __future__ import annotations

import time

import torch

from vts_drive.box_grammar import BoxLogitsProcessor
from vts_drive.flops import prefix_prefill_flops, qwen2_pair_flops, qwen2_token_flops
from vts_drive.measure import StageTimer, synchronize
from vts_drive.pipeline import Pipeline, WindowAnswers
from vts_drive.prompt import RISK_PROMPT
from vts_drive.window import FrameWindow


class FirstTokenClock:
    """A generate() streamer that notes when the first new token comes out (its first put()
    is the prompt)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.puts = 0
        self.time: float | None = None

    def put(self, value: torch.Tensor) -> None:
        self.puts += 1
        if self.puts == 2 and self.time is None:
            synchronize(self.device)
            self.time = time.perf_counter()

    def end(self) -> None:
        pass


@torch.inference_mode()
def answer_naively(pipeline: Pipeline, window: FrameWindow, prompts: list[str]) -> WindowAnswers:
    """Same prompts and visual tokens as the dense pipeline, none of its engineering."""
    start = time.perf_counter()
    timer = StageTimer(pipeline.device)
    with timer.stage("vision"):
        tokens, saliency = pipeline.encode_window(window)
    context = pipeline.prompts.context(pipeline.select_tokens(window, tokens, saliency, None), pipeline.device)
    hf_model = pipeline.model.hf_model
    text_config = hf_model.config.text_config
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    entry_bytes = 2 * text_config.num_key_value_heads * head_dim * hf_model.dtype.itemsize * text_config.num_hidden_layers
    layers = text_config.num_hidden_layers
    step_flops = layers * qwen2_token_flops(text_config) + 2.0 * text_config.hidden_size * text_config.vocab_size
    answers, generated, prefill_flops, decode_flops, cache_bytes = [], 0, 0.0, 0.0, 0
    clock = FirstTokenClock(pipeline.device)
    with timer.stage("generate"):
        for prompt in prompts:
            suffix = torch.tensor(pipeline.prompts.question_ids(prompt), device=pipeline.device)
            embeds = torch.cat([context.embeds, pipeline.decoder.embed(suffix)]).unsqueeze(0)
            output = hf_model.generate(
                inputs_embeds=embeds,
                max_new_tokens=pipeline.config.max_new_tokens,
                do_sample=False,
                eos_token_id=sorted(pipeline.stop_ids) or None,
                pad_token_id=pipeline.pad_id,
                streamer=clock,
                logits_processor=[BoxLogitsProcessor(pipeline.box_constraint)]
                if pipeline.box_constraint is not None and prompt == RISK_PROMPT
                else None,
            )[0].tolist()
            ids = output[: next((i for i, t in enumerate(output) if t in pipeline.stop_ids), len(output))]
            generated += len(ids)
            answers.append(pipeline.model.tokenizer.decode(ids, skip_special_tokens=True).strip())
            length = embeds.shape[1]
            prefill_flops += prefix_prefill_flops(text_config, [length] * text_config.num_hidden_layers)
            prefill_flops += 2.0 * text_config.hidden_size * text_config.vocab_size  # the first token's logits
            decode_flops += sum(step_flops + qwen2_pair_flops(text_config) * layers * (length + i) for i in range(1, len(output)))
            cache_bytes = max(cache_bytes, (length + len(output)) * entry_bytes)
    timings = timer.as_dict()
    timings["total"] = round((time.perf_counter() - start) * 1000.0, 3)
    return WindowAnswers(
        answers=answers,
        timings_ms=timings,
        tokens={"vision_dense": int(tokens[..., 0].numel()), "vision_kept": context.num_visual,
                "prompt": 0, "generated": generated},
        kv_cache_bytes=cache_bytes,
        llm_prefill_flops=prefill_flops,
        llm_decode_flops=decode_flops,
        ttft_ms=((clock.time or time.perf_counter()) - start) * 1000.0,
        frames_scored=0,
        frames_encoded=len(window.cameras) * window.num_frames,
    )
