"""The baseline a user of plain transformers would write: per window, encode every frame,
then one full `generate` per prompt (the visual context prefilled again for each)."""

from __future__ import annotations

import time

import torch

from vts_drive.box_grammar import BoxLogitsProcessor
from vts_drive.errors import InputError
from vts_drive.generation import GenerationMeter
from vts_drive.measure import StageTimer
from vts_drive.model.loading import VisionLanguageModel
from vts_drive.pipeline import Pipeline, WindowAnswers
from vts_drive.prompt import RISK_PROMPT
from vts_drive.window import FrameWindow


class FirstTokenStreamer:
    """A generate() streamer that tells the meter when the first new token comes out (its first
    put() is the prompt)."""

    def __init__(self, meter: GenerationMeter, device: torch.device) -> None:
        self.meter, self.device = meter, device
        self.puts = 0

    def put(self, value: torch.Tensor) -> None:
        self.puts += 1
        if self.puts == 2:
            self.meter.first_token(self.device)

    def end(self) -> None:
        pass


@torch.inference_mode()
def answer_naively(
    pipeline: Pipeline, window: FrameWindow, prompts: list[str], meter: GenerationMeter | None = None
) -> WindowAnswers:
    """Same prompts and visual tokens as the dense pipeline, none of its engineering. The meter
    counts as it does for the pipeline: each prompt a prefix and its suffix, then one row decoding;
    no prompt shares its cache, so the window holds every prompt's own."""
    if not isinstance(pipeline.model, VisionLanguageModel):
        raise InputError(
            f"naive runs transformers' generate on the weights of {pipeline.model_name}, which were not "
            "loaded (a spec, for exported graphs): load the model with load_model"
        )
    hf_model = pipeline.model.hf_model
    start = time.perf_counter()
    timer = StageTimer(pipeline.device)
    with timer.stage("vision"):
        tokens, saliency = pipeline.encode_window(window)
    context = pipeline.prompts.context(
        pipeline.select_tokens(window, tokens, saliency, None), pipeline.device
    )
    layers = pipeline.decoder.num_layers
    entry_bytes = (
        2 * pipeline.decoder.num_kv_heads * pipeline.decoder.head_dim * pipeline.model.dtype.itemsize * layers
    )
    answers, generated, held = [], 0, 0
    with timer.stage("generate"):
        for prompt in prompts:
            suffix = pipeline.prompts.question_ids(prompt)
            embeds = torch.cat(
                [context.embeds, pipeline.decoder.embed(torch.tensor(suffix, device=pipeline.device))]
            )
            output = hf_model.generate(
                inputs_embeds=embeds.unsqueeze(0),
                max_new_tokens=pipeline.config.max_new_tokens,
                do_sample=False,
                eos_token_id=sorted(pipeline.stop_ids) or None,
                pad_token_id=pipeline.pad_id,
                streamer=FirstTokenStreamer(meter, pipeline.device) if meter is not None else None,
                logits_processor=[BoxLogitsProcessor(pipeline.box_constraint)]
                if pipeline.box_constraint is not None and prompt == RISK_PROMPT
                else None,
            )[0].tolist()
            ids = output[: next((i for i, t in enumerate(output) if t in pipeline.stop_ids), len(output))]
            generated += len(ids)
            answers.append(pipeline.model.tokenizer.decode(ids, skip_special_tokens=True).strip())
            if meter is not None:
                length = len(embeds)
                meter.prefilled([context.length] * layers, 0, [len(suffix)])
                for step in range(1, len(output)):
                    meter.decoded(1, layers * (length + step))
                held += (length + len(output) - 1) * entry_bytes  # the last token picked is never fed back
                meter.held(held)
    timings = timer.as_dict()
    timings["total"] = round((time.perf_counter() - start) * 1000.0, 3)
    return WindowAnswers(
        answers=answers,
        timings_ms=timings,
        tokens={
            "vision_dense": int(tokens[..., 0].numel()),
            "vision_kept": context.num_visual,
            "prompt": 0,
            "generated": generated,
        },
        frames_scored=0,
        frames_encoded=len(window.cameras) * window.num_frames,
    )
