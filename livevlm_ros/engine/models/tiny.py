"""Built-in tiny models with RANDOM weights, for tests and smoke runs only.

They use the real transformers classes of each family (``LlavaOnevisionForConditionalGeneration``,
``SmolVLMForConditionalGeneration``), the real image processors and the family's chat-template
layout, with a byte-level tokenizer made on the fly and a few-MB configuration. Their answers are
NOT about the images: the weights are random. The names start with ``tiny-`` so that nobody
mistakes them for real checkpoints.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
)
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig
from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil
from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE as SMOLVLM_CHAT_TEMPLATE

#: Every built-in model's name starts with this; other names starting with it are refused at once.
TINY_PREFIX = "tiny-"
TINY_LLAVA_ONEVISION = TINY_PREFIX + "llava-onevision"
TINY_SMOLVLM = TINY_PREFIX + "smolvlm"
TINY_MODELS = (TINY_LLAVA_ONEVISION, TINY_SMOLVLM)

#: Weights are drawn from this seed, so every load of a tiny model is the same model.
TINY_SEED = 0
#: Trained context of the tiny language models (positions), small so tests can stream 10x past it.
TINY_MAX_POSITIONS = 1024
TINY_IMAGE_SIZE = 64
TINY_PATCH_SIZE = 8

# The chat template of the llava-hf LLaVA-OneVision checkpoints (Qwen2 im_start/im_end turns).
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_level_tokenizer(special_tokens: list[str], eos: str, pad: str, chat_template: str, **named) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer without merges (one token per byte) plus ``special_tokens``."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core)
    tokenizer.add_special_tokens({"eos_token": eos, "pad_token": pad, "additional_special_tokens": special_tokens})
    tokenizer.chat_template = chat_template
    for attribute, value in named.items():
        setattr(tokenizer, attribute, value)
    return tokenizer


def _tiny_text_kwargs(vocab_size: int) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=TINY_MAX_POSITIONS,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )


def _tiny_vision_kwargs() -> dict:
    return dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=TINY_IMAGE_SIZE,
        patch_size=TINY_PATCH_SIZE,
    )


def _padded_vocab(tokenizer) -> int:
    return (len(tokenizer) + 7) // 8 * 8


def build_tiny_llava_onevision():
    """(model, tokenizer, image_processor, chat_template) of a random-weight LLaVA-OneVision (16 tokens/frame)."""
    tokenizer = byte_level_tokenizer(
        ["<|im_start|>", "<|im_end|>", "<image>", "<video>"],
        eos="<|im_end|>",
        pad="<|endoftext|>",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
        image_token="<image>",
        video_token="<video>",
    )
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**_tiny_vision_kwargs()).to_dict(),
        text_config=Qwen2Config(**_tiny_text_kwargs(_padded_vocab(tokenizer))).to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=[[TINY_IMAGE_SIZE, TINY_IMAGE_SIZE]],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    with torch.random.fork_rng():
        torch.manual_seed(TINY_SEED)
        model = LlavaOnevisionForConditionalGeneration(config)
    processor = LlavaOnevisionImageProcessorPil(
        size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
        image_grid_pinpoints=[[TINY_IMAGE_SIZE, TINY_IMAGE_SIZE]],
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    _set_generation_tokens(model, tokenizer)
    return model, tokenizer, processor, LLAVA_ONEVISION_CHAT_TEMPLATE


def build_tiny_smolvlm():
    """(model, tokenizer, image_processor, chat_template) of a random-weight SmolVLM (16 tokens/frame)."""
    tokenizer = byte_level_tokenizer(
        ["<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>"],
        eos="<end_of_utterance>",
        pad="<|endoftext|>",
        chat_template=SMOLVLM_CHAT_TEMPLATE,
        image_token="<image>",
        fake_image_token="<fake_token_around_image>",
        global_image_token="<global-img>",
    )
    config = SmolVLMConfig(
        vision_config=SmolVLMVisionConfig(**_tiny_vision_kwargs()).to_dict(),
        text_config=LlamaConfig(**_tiny_text_kwargs(_padded_vocab(tokenizer))).to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=2,
    )
    with torch.random.fork_rng():
        torch.manual_seed(TINY_SEED)
        model = SmolVLMForConditionalGeneration(config)
    processor = SmolVLMImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": TINY_IMAGE_SIZE},
        max_image_size={"longest_edge": TINY_IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    _set_generation_tokens(model, tokenizer)
    return model, tokenizer, processor, SMOLVLM_CHAT_TEMPLATE


def _set_generation_tokens(model, tokenizer) -> None:
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
