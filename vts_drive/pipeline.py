"""The pipeline: one FrameWindow in, one SceneReport out.

Stages (each a plain object with tensors in and out):
  keyframe CNN -> keyframe flags [C, T] (modes with VTS)
  vision encoder -> visual tokens [C, T, N, D] + saliency [C, T, N]
  token reduction (the mode decides which tokens enter the LLM)
  prompt builder -> shared prefix embeds + one suffix per prompt
  decoder -> one prefill of the prefix (mixture-of-depths routing in modes
             with "mod"), batched decode of every prompt
  parsing -> SceneReport

Modes and backends are configuration of this one object, never copies of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from vts_drive.backend import KeyframeStage, LanguageStage, VisionStage
from vts_drive.box_grammar import BoxConstraint
from vts_drive.chat_prompt import prompt_builder
from vts_drive.config import MODES, Overrides, PipelineConfig, resolve_config
from vts_drive.drafts import DraftStore
from vts_drive.errors import InputError
from vts_drive.frame_cache import FrameCache, FrameFeatures, frame_key
from vts_drive.generation import GenerationMeter, HeadCache, generate
from vts_drive.keyframe.scorer import KeyframeScorer, load_scorer, select_keyframes
from vts_drive.measure import StageTimer
from vts_drive.mod.routing import load_routers
from vts_drive.model.decoder import Qwen2Decoder
from vts_drive.model.loading import ModelSpec, VisionLanguageModel, load_model, load_spec, model_folder
from vts_drive.model.vision import VisionEncoder
from vts_drive.prompt import DESCRIPTION_PROMPT, RISK_PROMPT, FrameTokens
from vts_drive.report import QA, SceneReport, parse_risk
from vts_drive.shapes import GenerationShapes, generation_shapes
from vts_drive.tokens.prumerge import prumerge_frame
from vts_drive.tokens.vts import select_tokens as vts_select
from vts_drive.window import FrameWindow

__all__ = ["MODES", "Pipeline", "PipelineConfig", "WindowAnswers"]


@dataclass
class WindowAnswers:
    """What generation produced for one window, before it becomes a report."""

    answers: list[str]
    timings_ms: dict[str, float]
    tokens: dict[str, int]
    frames_scored: int  # frames the keyframe CNN ran on (new to the frame cache)
    frames_encoded: int  # frames the vision tower ran on (new to the frame cache, not gated away)


class Pipeline:
    """The stages of one configuration. `overrides` are dotted settings over the model folder's
    own (vts_drive/config.py); the configuration they resolve to is `config`."""

    def __init__(self, model: ModelSpec, overrides: Overrides | None = None) -> None:
        """`model`: the checkpoint with its weights (VisionLanguageModel) for backend torch; for
        onnxruntime and tensorrt its spec is enough, the weights being in the exported graphs."""
        self.model = model
        self.config = config = resolve_config(model.folder, overrides)
        self.vision: VisionStage
        self.decoder: LanguageStage
        self.keyframe_scorer: KeyframeStage | None
        self.export_limits: GenerationShapes | None = None  # the largest window the exported graphs take
        if config.backend == "torch":
            if not isinstance(model, VisionLanguageModel):
                raise InputError(
                    f"model {model.name} was loaded without its weights (a spec), which backend torch "
                    "runs: load it with load_model, or run the exported graphs (backend onnxruntime or tensorrt)"
                )
            self.vision, self.decoder, self.keyframe_scorer = self._torch_stages(model)
        else:  # the same stages, computed by the graphs `vts-drive export` wrote
            from vts_drive.engines.stages import load_exported_stages

            self.vision, self.decoder, self.keyframe_scorer, self.export_limits = load_exported_stages(
                model, config
            )
        self.prompts = prompt_builder(model, self.decoder.embed, config.prompt_layout)
        tokenizer = model.tokenizer
        self.stop_ids = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id}
        self.stop_ids.discard(None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.frame_cache = FrameCache(enabled=config.frame_cache)
        self.drafts = DraftStore()  # the stream's previous answers, drafts for decoding (config.draft)
        self.head_cache: HeadCache | None = HeadCache()
        self.box_constraint = BoxConstraint(tokenizer) if config.box_grammar else None

    def _torch_stages(
        self, model: VisionLanguageModel
    ) -> tuple[VisionEncoder, Qwen2Decoder, KeyframeScorer | None]:
        """The checkpoint's modules, with the routers and keyframe scorer the mode needs."""
        config = self.config
        scorer = None
        if config.token_reduction == "vts":
            scorer = load_scorer(config.keyframe_scorer or model.folder, config.keyframe, self.device)
        routers = None
        if config.layer_skipping:
            text_config = model.config.text_config
            routers = load_routers(
                config.routers or model.folder,
                config.mod,
                text_config.hidden_size,
                text_config.num_hidden_layers,
                self.device,
            ).to(model.dtype)
        hf = model.hf_model
        decoder = Qwen2Decoder(hf.model.language_model, hf.lm_head, routers, seed=config.seed)
        return VisionEncoder(model), decoder, scorer

    @classmethod
    def load(cls, model: str, overrides: Overrides | None = None) -> Pipeline:
        """The model by shipped name, folder or hub id, with its settings and `overrides`; the
        settings are checked before any weight is read, and backends that run exported graphs
        read none."""
        folder = model_folder(model)
        config = resolve_config(folder, overrides)
        load = load_model if config.backend == "torch" else load_spec
        return cls(load(model, device=config.device, dtype=config.dtype), overrides)

    def new_stream(self) -> None:
        """Forget the stream's state (cached frames, the answers drafts come from): the next window
        starts a stream, as after a reset."""
        self.frame_cache.clear()
        self.drafts.clear()

    def cold_start(self) -> None:
        """Forget everything windows leave behind, the recent answers drafts draw wording from
        too: measuring after a warm-up window starts as a fresh process does."""
        self.new_stream()
        self.drafts = DraftStore()

    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def keep_ratio(self) -> float | None:
        """The routed layers' r; None without mixture-of-depths."""
        return self.config.mod.keep_ratio if self.config.layer_skipping else None

    def largest_shapes(self, cameras: list[str], frames: int, prompt_tokens: list[int]) -> GenerationShapes:
        """The largest sizes answering prompts of these suffix lengths (tokens) about a window of
        these cameras x frames feeds the LLM: every frame keeping all its tokens, every answer
        running to max_new_tokens. An export is sized by it, and a window checked against one."""
        count = self.vision.tokens_per_frame
        layout = self.prompts.layout(
            [(camera, frame, count) for camera in cameras for frame in range(frames)]
        )
        return generation_shapes(
            layout.frame_index,
            layout.head_length,
            prompt_tokens,
            self.config.max_new_tokens,
            self.keep_ratio,
            self.config.draft,
        )

    def describe(self, window: FrameWindow, questions: list[str] | None = None) -> SceneReport:
        """Scene description, risk assessment and QA for one window."""
        questions = self.config.questions if questions is None else questions
        result = self.answer(window, [DESCRIPTION_PROMPT, RISK_PROMPT, *questions])
        description, risk_answer, *answers = result.answers
        return SceneReport(
            stamp=window.stamp_ns / 1e9,
            cameras=list(window.cameras),
            frames_per_camera=window.num_frames,
            mode=self.config.mode,
            model=self.model_name,
            description=description,
            risk=parse_risk(risk_answer, default_camera=window.cameras[0]),
            qa=[QA(question, answer) for question, answer in zip(questions, answers)],
            timings_ms=result.timings_ms,
            tokens=result.tokens,
        )

    def ask(self, window: FrameWindow, questions: list[str]) -> list[str]:
        """Answers to free-form questions about a window, without description or risk."""
        return self.answer(window, questions).answers

    @torch.inference_mode()
    def answer(
        self, window: FrameWindow, prompts: list[str], meter: GenerationMeter | None = None
    ) -> WindowAnswers:
        """Every prompt about one window; `meter`, when given, counts what the LLM spent."""
        if not prompts:
            raise InputError("no prompts to answer")
        start = time.perf_counter()
        if self.config.mode == "newest":
            window = window.newest_frames()
        suffixes = [self.prompts.question_ids(text) for text in prompts]
        lengths = [len(ids) for ids in suffixes]
        # refuse what the exported graphs' profiles do not take, before any of them runs
        if self.export_limits is not None:
            needed = self.largest_shapes(window.cameras, window.num_frames, lengths)
            where = f"a window of {len(window.cameras)} cameras x {window.num_frames} frames"
            where += f" with {len(prompts)} prompts"
            needed.check_fits(self.export_limits, where, self.config.engines)
        timer = StageTimer(self.device)
        scored, encoded = self.frame_cache.scored, self.frame_cache.misses
        keys = [
            frame_key(camera, stamp, image)
            for camera, stamps, images in zip(window.cameras, window.stamps_ns, window.images)
            for stamp, image in zip(stamps, images)
        ]
        entries = [self.frame_cache.get(key) for key in keys]  # camera-major, like the window
        # each camera's frame before the window in the stream (image, results), if one was seen
        before = [
            self.frame_cache.frame_before(camera, stamps[0])
            for camera, stamps in zip(window.cameras, window.stamps_ns)
        ]
        keyframes = None
        present = encode = torch.ones(len(window.cameras), window.num_frames, dtype=torch.bool)
        if self.keyframe_scorer is not None:
            with timer.stage("keyframe"):
                probabilities = self.keyframe_probabilities(window, entries, before)  # [C, T]
                keyframes = select_keyframes(probabilities, self.config.keyframe)
                encode = probabilities >= self.config.keyframe.skip_threshold
                # keyframes and the frames the CNN lets through enter, and always the window's oldest
                # frame: questions about the past compare it with the present
                present = keyframes | encode
                present[:, 0] = True
        with timer.stage("vision"):
            previous = [seen[1] if seen is not None else None for seen in before]
            tokens, saliency = self.encode_frames(
                window, entries, present, encode, previous
            )  # [C, T, N, D], [C, T, N]
        with timer.stage("sparsify"):
            frames = self.select_tokens(window, tokens, saliency, keyframes, present)
        self.frame_cache.keep_only(set(keys))
        self.frame_cache.remember_newest(window, entries)
        context = self.prompts.context(frames, self.device)
        # past the model's context the LLM would still run, silently degraded: refuse before any prefill
        positions = generation_shapes(
            context.frame_index.tolist(),
            context.head_length,
            lengths,
            self.config.max_new_tokens,
            self.keep_ratio,
            self.config.draft,
        ).positions
        if positions > self.model.max_positions:
            raise InputError(
                f"a window of {len(window.cameras)} cameras x {window.num_frames} frames needs {positions} positions "
                f"(prompt and answers) but model {self.model_name} holds {self.model.max_positions} "
                "(max_position_embeddings); use fewer cameras or frames, or a mode that drops tokens"
            )
        drafts = self.drafts.drafts(window, prompts) if self.config.draft else None
        token_ids = generate(
            self.decoder,
            context,
            suffixes,
            self.stop_ids,
            self.config.max_new_tokens,
            timer,
            pad_id=self.pad_id,
            constraints=[self.box_constraint if text == RISK_PROMPT else None for text in prompts],
            head_cache=self.head_cache,
            meter=meter,
            drafts=drafts,
        )
        if self.config.draft:
            self.drafts.keep(window, prompts, token_ids)
        answers = [self.model.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in token_ids]
        timings = timer.as_dict()
        timings["total"] = round((time.perf_counter() - start) * 1000.0, 3)
        return WindowAnswers(
            answers=answers,
            timings_ms=timings,
            tokens={
                "vision_dense": int(tokens.shape[0] * tokens.shape[1] * tokens.shape[2]),
                "vision_kept": context.num_visual,
                "prompt": context.length + sum(len(ids) for ids in suffixes),
                "generated": sum(len(ids) for ids in token_ids),
                "frames_skipped": int((~present).sum()),  # frames gated away: no visual token enters for them
            },
            frames_scored=self.frame_cache.scored - scored,
            frames_encoded=self.frame_cache.misses - encoded,
        )

    @torch.inference_mode()
    def encode_window(self, window: FrameWindow) -> tuple[torch.Tensor, torch.Tensor]:
        """Every frame of every camera through the vision tower, bypassing the frame cache."""
        fresh = [FrameFeatures() for _ in range(len(window.cameras) * window.num_frames)]
        everything = torch.ones(len(window.cameras), window.num_frames, dtype=torch.bool)
        return self.encode_frames(window, fresh, everything, everything, [None] * len(window.cameras))

    def encode_frames(
        self,
        window: FrameWindow,
        entries: list[FrameFeatures],
        present: torch.Tensor,
        encode: torch.Tensor,
        previous: list[FrameFeatures | None],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens [C, T, N, D] and saliency [C, T, N] of the frames marked `present` [C, T] (the
        others stay zero). Frames marked `encode` go through the vision tower unless their cache
        entry has tokens already. A frame not marked `encode` (the keyframe CNN saw no change)
        takes the tokens of the stream's frame before it as its stand-in (for a window's oldest
        frame, `previous`: each camera's frame before the window), so a present one, such as a
        keyframe, costs no encoding; only a present frame with nothing before it to stand in is
        encoded."""
        images = [image for camera_images in window.images for image in camera_images]
        present_flags, encode_flags = present.flatten().tolist(), encode.flatten().tolist()
        encoded = self.encode_into(
            images, entries, [i for i, e in enumerate(entries) if encode_flags[i] and e.tokens is None]
        )
        fill_stand_ins(entries, encode_flags, window.num_frames, previous)
        while (
            True
        ):  # each camera's earliest present frame with nothing to stand in, then its followers stand in
            late = {
                i // window.num_frames: i
                for i, e in reversed(list(enumerate(entries)))
                if present_flags[i] and e.tokens is None
            }
            if not late:
                break
            encoded += self.encode_into(images, entries, sorted(late.values()))
            fill_stand_ins(entries, encode_flags, window.num_frames, previous)
        for i, is_present in enumerate(present_flags):
            if is_present:
                self.frame_cache.count(hit=i not in encoded)
        count, dim = self.vision.tokens_per_frame, self.decoder.hidden_size
        zeros = torch.zeros(count, dim, device=self.device, dtype=self.model.dtype)
        all_tokens = torch.stack(
            [e.tokens if p else zeros for e, p in zip(entries, present_flags)]
        )  # [C*T, N, D]
        all_saliency = torch.stack(
            [e.saliency if p else zeros[:, 0].float() for e, p in zip(entries, present_flags)]
        )
        shape = (len(window.cameras), window.num_frames)
        return all_tokens.view(*shape, count, dim), all_saliency.view(*shape, count)

    def encode_into(
        self, images: list[np.ndarray], entries: list[FrameFeatures], frames: list[int]
    ) -> list[int]:
        """Encode images[i] into entries[i] for each i in `frames`; returns `frames`."""
        if frames:
            tokens, saliency = self.vision.encode(self.vision.preprocess([images[i] for i in frames]))
            for row, i in enumerate(frames):
                entries[i].tokens, entries[i].saliency = tokens[row], saliency[row]
        return frames

    def keyframe_probabilities(
        self,
        window: FrameWindow,
        entries: list[FrameFeatures],
        before: list[tuple[np.ndarray, FrameFeatures] | None],
    ) -> torch.Tensor:
        """Keyframe probability [C, T] of every frame, each computed once per stream: a frame is
        scored against the stream's frame before it, for a window's oldest frame the camera's
        frame in `before` (the newest an earlier window showed), so the score does not depend on
        the stride; the first frame of a stream has nothing to compare with and is a keyframe
        (probability 1)."""
        frames = window.num_frames
        images = [image for camera_images in window.images for image in camera_images]
        previous = {}  # frame index -> the frame before it in the stream
        for i, entry in enumerate(entries):
            if entry.keyframe_probability is None:
                seen = before[i // frames]
                image = images[i - 1] if i % frames else seen[0] if seen is not None else None
                if image is None:
                    entry.keyframe_probability = 1.0
                else:
                    previous[i] = image
        self.frame_cache.scored += len(previous)
        if previous:
            scorer = self.keyframe_scorer
            if scorer is None:
                raise ValueError(f"mode {self.config.mode} has no keyframe scorer to score frames with")
            with torch.no_grad():
                logits = scorer(
                    scorer.prepare([images[i] for i in previous]), scorer.prepare(list(previous.values()))
                )
            for i, probability in zip(previous, torch.sigmoid(logits).tolist()):
                entries[i].keyframe_probability = probability
        probabilities = torch.tensor([entry.keyframe_probability for entry in entries])
        return probabilities.view(len(window.cameras), frames)

    def score_keyframes(self, window: FrameWindow) -> torch.Tensor:
        """Keyframe flags [C, T] of a window on its own (no frame cache)."""
        fresh = [FrameFeatures() for _ in range(len(window.cameras) * window.num_frames)]
        probabilities = self.keyframe_probabilities(window, fresh, [None] * len(window.cameras))
        return select_keyframes(probabilities, self.config.keyframe)

    def select_tokens(
        self,
        window: FrameWindow,
        tokens: torch.Tensor,
        saliency: torch.Tensor,
        keyframes: torch.Tensor | None,
        encoded: torch.Tensor | None = None,
    ) -> list[FrameTokens]:
        """Which visual tokens enter the LLM, in (camera, frame, patch) order. Frames that were
        not encoded (`encoded` [C, T] False) keep their marker and no tokens."""
        reduction = self.config.token_reduction
        cameras, frames = range(len(window.cameras)), range(window.num_frames)
        if encoded is None:
            encoded = torch.ones(len(window.cameras), window.num_frames, dtype=torch.bool)
        if reduction == "none":
            kept = [[tokens[c, t] if encoded[c, t] else tokens[c, t, :0] for t in frames] for c in cameras]
        elif reduction == "vts":
            if keyframes is None:
                raise ValueError("VTS keeps tokens relative to keyframes: give them")
            keep = vts_select(
                tokens[None], saliency[None], keyframes[None], self.vision.token_grid, self.config.vts
            )[0]
            keep &= encoded.to(keep.device).unsqueeze(-1)
            kept = [[tokens[c, t][keep[c, t]] for t in frames] for c in cameras]
        else:
            plus = reduction == "prumerge+"
            kept = [
                [prumerge_frame(tokens[c, t], saliency[c, t], self.config.prumerge, plus)[1] for t in frames]
                for c in cameras
            ]
        return [FrameTokens(window.cameras[c], t, kept[c][t]) for c in cameras for t in frames]


def fill_stand_ins(
    entries: list[FrameFeatures],
    encode_flags: list[bool],
    frames_per_camera: int,
    previous: list[FrameFeatures | None],
) -> None:
    """Each frame not to be encoded that has no tokens yet takes those of the stream's frame before
    it (in time order, so a stand-in can come from a stand-in; for a camera's oldest frame in the
    window, `previous[camera]`). Cached with the frame, the stand-in also serves later windows."""
    for i, entry in enumerate(entries):
        if encode_flags[i] or entry.tokens is not None:
            continue
        before = entries[i - 1] if i % frames_per_camera else previous[i // frames_per_camera]
        if before is not None and before.tokens is not None:
            entry.tokens, entry.saliency = before.tokens, before.saliency
