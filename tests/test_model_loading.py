"""The user-facing loading path, and its errors for folders that are not usable checkpoints."""

import json
import shutil

import pytest
import torch
from transformers import BertConfig, BertModel

from vts_drive.errors import InputError
from vts_drive.model.loading import load_model


def test_tiny_checkpoint_loads_through_user_path(tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    assert type(model.hf_model).__name__ == "LlavaOnevisionForConditionalGeneration"
    assert model.tokenizer.convert_tokens_to_ids("<|im_end|>") == model.tokenizer.eos_token_id
    assert model.dtype == torch.float32
    assert not any(p.requires_grad for p in model.hf_model.parameters())


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_model(str(tmp_path / "no_such_model"))


def test_folder_without_config(tmp_path):
    with pytest.raises(InputError, match="no config.json"):
        load_model(str(tmp_path))


def test_corrupt_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json is not readable JSON"):
        load_model(str(tmp_path))


def test_other_architecture_is_refused(tmp_path):
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(tmp_path)
    with pytest.raises(InputError, match="bert checkpoint.*LlavaOnevisionForConditionalGeneration"):
        load_model(str(tmp_path))


def test_pickled_weights_are_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(InputError, match="no .safetensors weights .*pytorch_model.bin"):
        load_model(str(folder))


def test_bad_image_statistics(tiny_model_dir, tmp_path):
    folder = tmp_path / "badstats"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": 32}))
    with pytest.raises(InputError, match="preprocessor_config.json lacks valid image_mean"):
        load_model(str(folder))


def test_cuda_without_gpu_is_a_clear_error(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match="CUDA is not available"):
        load_model(str(tiny_model_dir), device="cuda")
