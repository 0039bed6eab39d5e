"""Checkpoint families: a hub LLaVA-OneVision checkpoint is prompted exactly as transformers'
LlavaOnevisionProcessor and the model's own video merge prompt it (prompt_layout chat_template);
the project's checkpoints, synthdrive-tiny among them, keep their own layout.

The hub-like checkpoint is built here with the hub's processor files and the hub's vision geometry
(SigLIP at 384 px, patch 14: 729 patches pooled to 196 tokens a frame), at small widths and random
weights. transformers' LlavaOnevisionVideoProcessor needs torchvision, which does not load beside
the CPU build of torch the project installs: a stand-in runs the checkpoint's own image processor
(LlavaOnevisionImageProcessorPil: resize, rescale, normalise) on each frame of a video.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoTokenizer,
    BatchFeature,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionProcessor,
    Qwen2Config,
    SiglipVisionConfig,
    processing_utils,
)
from transformers.image_utils import SizeDict
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)
from transformers.video_processing_utils import VideoProcessorMixin

from vts_drive.chat_prompt import ChatPromptBuilder, camera_names, prompt_builder
from vts_drive.config import SETTINGS_FILE, resolve_config
from vts_drive.errors import InputError
from vts_drive.generation import prefill
from vts_drive.model.loading import load_spec
from vts_drive.model.small import train_tokenizer
from vts_drive.pipeline import Pipeline
from vts_drive.prompt import END_OF_TURN, SYSTEM_PROMPT, PromptBuilder
from vts_drive.window import FrameWindow

# the chat template transformers' conversion script gave llava-hf/llava-onevision-qwen2-*-ov-hf
HUB_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# the hub checkpoint's image and video processor settings (SigLIP's statistics, bicubic resize to 384)
PIXELS = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "resample": 3,
    "rescale_factor": 1 / 255,
    "size": {"height": 384, "width": 384},
}
QUESTION = "What should the ego car do?"
TEXT_WIDTH = 64
CORPUS = [QUESTION, camera_names(("front", "front_left")), "the road is clear slow down"]


@pytest.fixture(scope="module")
def hub_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as the hub's llava-hf checkpoints are: weights and config, tokenizer, and
    the files their processor wrote (processor_config.json, chat_template.json, processors' configs)."""
    folder = tmp_path_factory.mktemp("hub") / "llava-onevision"
    tokenizer = train_tokenizer(CORPUS * 4, vocab_size=320)
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=384,
            patch_size=14,
            vision_use_head=False,
        ),
        text_config=Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_WIDTH,
            intermediate_size=2 * TEXT_WIDTH,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlavaOnevisionForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    pinpoints = [[384 * rows, 384 * columns] for rows in range(1, 7) for columns in range(1, 7)]
    files = {
        "processor_config.json": {
            "image_token": "<image>",
            "num_image_tokens": 729,
            "processor_class": "LlavaOnevisionProcessor",
            "video_token": "<video>",
            "vision_aspect_ratio": "anyres_max_9",
            "vision_feature_select_strategy": "full",
        },
        "chat_template.json": {"chat_template": HUB_CHAT_TEMPLATE},
        "preprocessor_config.json": {
            **PIXELS,
            "do_pad": True,
            "image_grid_pinpoints": pinpoints,
            "image_processor_type": "LlavaOnevisionImageProcessor",
            "processor_class": "LlavaOnevisionProcessor",
        },
        "video_preprocessor_config.json": {
            **PIXELS,
            "processor_class": "LlavaOnevisionProcessor",
            "video_processor_type": "LlavaOnevisionVideoProcessor",
        },
    }
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content, indent=2))
    return folder


class FrameByFrameVideoProcessor(VideoProcessorMixin):
    """Stand-in for LlavaOnevisionVideoProcessor (it needs torchvision): the checkpoint's image
    processor resizes, rescales and normalises each frame of each video."""

    def __init__(self, image_processor: LlavaOnevisionImageProcessorPil) -> None:
        super().__init__()
        self.image_processor = image_processor

    def frame(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 [H, W, 3] -> pixels [3, S, S]."""
        processor = self.image_processor
        size = SizeDict(height=processor.size["height"], width=processor.size["width"])
        pixels = processor.resize(image.transpose(2, 0, 1), size, resample=processor.resample)
        pixels = processor.rescale(pixels, processor.rescale_factor)
        return torch.from_numpy(processor.normalize(pixels, processor.image_mean, processor.image_std))

    def __call__(self, videos: list[np.ndarray], **kwargs: object) -> BatchFeature:
        """Videos [F, H, W, 3] -> pixel_values_videos [V, F, 3, S, S]."""
        pixels = torch.stack([torch.stack([self.frame(image) for image in video]) for video in videos])
        return BatchFeature({"pixel_values_videos": pixels})


def hub_processor(folder: Path) -> LlavaOnevisionProcessor:
    """transformers' processor from the checkpoint's files, the video processor stood in for."""
    settings = json.loads((folder / "processor_config.json").read_text())
    settings.pop("processor_class")
    image_processor = LlavaOnevisionImageProcessorPil.from_pretrained(folder)
    return LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=AutoTokenizer.from_pretrained(folder),
        video_processor=FrameByFrameVideoProcessor(image_processor),
        chat_template=json.loads((folder / "chat_template.json").read_text())["chat_template"],
        **settings,
    )


def zeros(token_ids: torch.Tensor) -> torch.Tensor:
    """An embedding of every token as zeros [..., D], where only the layout matters."""
    return torch.zeros(*token_ids.shape, TEXT_WIDTH)


def camera_window(cameras: list[str], frames: int, seed: int) -> FrameWindow:
    """Frames neither square nor 384 px, so that resizing matters."""
    rng = np.random.default_rng(seed)
    images = [[rng.integers(0, 256, (90, 160, 3), dtype=np.uint8) for _ in range(frames)] for _ in cameras]
    return FrameWindow(cameras, images, [[t * 100_000_000 for t in range(frames)] for _ in cameras])


@pytest.mark.parametrize("cameras", [["front"], ["front", "front_left"]])
def test_prefix_is_the_processors_prompt_merged_as_the_model_merges_videos(
    hub_checkpoint, monkeypatch, cameras
):
    """For the same frames and question, the embeddings the pipeline feeds the LLM (shared prefix,
    then the question's suffix) are, token for token, those LlavaOnevisionForConditionalGeneration
    feeds its language model from the processor's inputs; and the next-token logits the pipeline's
    prefill gives at the positions it assigns are the model's."""
    # the processor checks its video processor's class against transformers' exports, which list
    # VideoProcessorMixin only where torchvision loads
    monkeypatch.setattr(
        processing_utils.transformers_module, "VideoProcessorMixin", VideoProcessorMixin, raising=False
    )
    window = camera_window(cameras, frames=2, seed=len(cameras))
    processor = hub_processor(hub_checkpoint)
    content = [{"type": "video"} for _ in cameras]
    if len(cameras) > 1:
        content.append({"type": "text", "text": camera_names(tuple(cameras))})
    content.append({"type": "text", "text": QUESTION})
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    videos = [np.stack(images) for images in window.images]  # [F, H, W, 3] per camera
    inputs = processor(text=text, videos=videos, return_tensors="pt")
    video_id = processor.video_token_id
    assert int((inputs["input_ids"] == video_id).sum()) == len(cameras) * (2 * 196 + 1)

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(hub_checkpoint).eval()
    fed: dict[str, torch.Tensor] = {}

    def keep_inputs(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        fed["embeds"] = kwargs["inputs_embeds"]

    model.model.language_model.register_forward_pre_hook(keep_inputs, with_kwargs=True)
    with torch.no_grad():
        expected_logits = model(**inputs).logits[0, -1]  # [V]
    expected = fed["embeds"][0]  # [L, D]

    pipeline = Pipeline.load(str(hub_checkpoint), {"max_new_tokens": 4})
    assert isinstance(pipeline.prompts, ChatPromptBuilder)
    pixels = pipeline.vision.preprocess([image for images in window.images for image in images])
    assert torch.equal(pixels, inputs["pixel_values_videos"].flatten(0, 1))
    with torch.no_grad():
        tokens, saliency = pipeline.encode_window(window)
        context = pipeline.prompts.context(
            pipeline.select_tokens(window, tokens, saliency, None), pipeline.device
        )
        suffix = pipeline.prompts.question_ids(QUESTION)
        embeds = torch.cat([context.embeds, pipeline.decoder.embed(torch.tensor(suffix))])  # [L, D]
        logits = prefill(pipeline.decoder, context, [suffix]).logits[0]  # [V]

    assert embeds.shape == expected.shape
    torch.testing.assert_close(embeds, expected, rtol=1e-5, atol=1e-5)
    # the same tokens at the same positions: each text token where the processor put it, each
    # frame's pooled tokens where its placeholders are, and image_newline on each video's last one
    video_slots = torch.nonzero(inputs["input_ids"][0] == video_id).flatten()
    newline_slots = video_slots[torch.arange(1, len(cameras) + 1) * (2 * 196 + 1) - 1]
    visual_slots = video_slots[~torch.isin(video_slots, newline_slots)]
    assert torch.equal(torch.nonzero(context.is_visual).flatten(), visual_slots)
    text_ids = inputs["input_ids"][0, ~torch.isin(torch.arange(expected.shape[0]), visual_slots)]
    ours = [*pipeline.prompts.layout([(c, t, 196) for c in cameras for t in range(2)]).text_ids, *suffix]
    assert text_ids.tolist() == ours
    newline = model.model.image_newline
    assert all(torch.equal(embeds[slot], newline) for slot in newline_slots.tolist())
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)


def test_the_hub_folder_takes_the_chat_template_layout_unless_its_settings_say_otherwise(
    hub_checkpoint, tmp_path
):
    """The rule: a folder a transformers processor saved is prompted with its chat template; the
    folder's vts_drive.json (or a run's setting) overrides it. Without weights in memory (the
    exported graphs' backends), image_newline is read from the checkpoint's weights alone."""
    spec = load_spec(str(hub_checkpoint))
    assert spec.resample == "bicubic"
    hub = prompt_builder(spec, zeros, resolve_config(spec.folder).prompt_layout)
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(hub_checkpoint)
    assert isinstance(hub, ChatPromptBuilder) and hub.video_token == "<video>"
    assert torch.equal(hub.embed(torch.tensor([hub.video_token_id]))[0], model.model.image_newline)

    own = tmp_path / "own-layout"
    shutil.copytree(hub_checkpoint, own)
    (own / SETTINGS_FILE).write_text(json.dumps({"prompt_layout": "vts_drive"}))
    assert type(prompt_builder(spec, zeros, resolve_config(own).prompt_layout)) is PromptBuilder

    text_only = (
        "{% for part in messages[0]['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    )
    (own / "chat_template.json").write_text(json.dumps({"chat_template": text_only}))
    with pytest.raises(InputError, match="shows 0 <video> for 1 videos"):
        prompt_builder(load_spec(str(own)), zeros, "chat_template")
    with pytest.raises(InputError, match="prompt_layout 'hub' is not one of"):
        resolve_config(own, {"prompt_layout": "hub"})


def test_synthdrive_tiny_keeps_its_own_layout():
    """synthdrive-tiny was trained with the project's layout (system turn, camera and frame
    markers) on area-resized frames; no processor saved it, so auto keeps both."""
    spec = load_spec("synthdrive-tiny")
    assert spec.resample == "area" and resolve_config(spec.folder).prompt_layout == "auto"
    builder = prompt_builder(spec, zeros, "auto")
    assert type(builder) is PromptBuilder
    layout = builder.layout([("front", 0, 2), ("front", 1, 2), ("front_left", 0, 1), ("front_left", 1, 1)])
    assert spec.tokenizer.decode(layout.text_ids) == (
        f"<|im_start|>system\n{SYSTEM_PROMPT}{END_OF_TURN}\n<|im_start|>user\n"
        "camera front:\nframe 1:\nframe 0:\ncamera front_left:\nframe 1:\nframe 0:\n"
    )
    assert (
        layout.frame_index.count(-1) == len(layout.text_ids)
        and len(layout.frame_index) == len(layout.text_ids) + 6
    )
    assert builder.question_ids(QUESTION) == builder.text_ids(
        f"{QUESTION}{END_OF_TURN}\n<|im_start|>assistant\n"
    )
