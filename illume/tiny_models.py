"""Tiny, randomly initialised VLMs of real architectures, built locally (no hub access).

Tests and benchmarks use them to exercise exactly the loading path of real checkpoints:
each builder writes a save_pretrained directory (model + processor + tokenizer) that
`illume.vlm.VLM.load` reads back like any Hugging Face checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import torch

# Built and tested here on every run (tests/core, tests/backend, tests/training).
ARCHITECTURES = ("llava", "llava_next", "idefics3", "paligemma", "gemma3", "mllama", "idefics2", "chameleon",
                 "aya_vision", "blip2", "florence2")
# Their processors need torchvision (video processors); tests skip where it cannot be imported.
TORCHVISION_ARCHITECTURES = ("qwen2_vl", "qwen2_5_vl")

_DEFAULT_CORPUS = (
    "what color is the shape ? red blue green yellow the circle square triangle is left of right "
    "because it has a long neck seeing that the giraffe is tall there are two dogs on grass "
    "Q: A: yes no one two three four five large small above below next to the sky is blue"
)

# Idefics2 and Idefics3 (SmolVLM's base): "User:<image> question<end_of_utterance>\nAssistant:"
IDEFICS_CHAT_TEMPLATE = ("{% for message in messages %}{{ message['role'] | capitalize }}:"
                         "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
                         "{% else %} {{ part['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
                         "{% if add_generation_prompt %}Assistant:{% endif %}")


def train_tokenizer(corpus: Iterable[str], special_tokens: list[str], vocab_size: int = 400,
                    named: dict[str, str] | None = None):
    """A byte-level BPE tokenizer trained on the spot, wrapped for transformers.

    `named` gives model-specific special tokens an attribute (e.g. Gemma3's boi_token).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token=None, extra_special_tokens=named)


def _llama_text_config(vocab_size: int, pad_id: int, bos_id: int, eos_id: int, hidden: int = 64):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=512, pad_token_id=pad_id, bos_token_id=bos_id,
                       eos_token_id=eos_id, tie_word_embeddings=False)


def _clip_llama_configs(tokenizer, image_size: int, patch: int):
    """A 2-layer CLIP vision tower and a small Llama: the LLaVA family's tiny halves."""
    from transformers import CLIPVisionConfig

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_size, patch_size=patch, projection_dim=32)
    text = _llama_text_config(len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    return vision, text


def build_llava(out: Path, corpus: Iterable[str]) -> Path:
    from transformers import (CLIPImageProcessor, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tokenizer = train_tokenizer(corpus, ["<pad>", "<s>", "</s>", "<image>"])
    image_size, patch = 32, 8
    vision, text = _clip_llama_configs(tokenizer, image_size, patch)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         image_seq_length=(image_size // patch) ** 2)
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    _save(model, processor, out)
    return out


def build_idefics3(out: Path, corpus: Iterable[str]) -> Path:
    from transformers import (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor,
                              Idefics3Processor, Idefics3VisionConfig)

    specials = ["<pad>", "<s>", "</s>", "<image>", "<fake_token_around_image>", "<global-img>",
                "<end_of_utterance>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tokenizer = train_tokenizer(list(corpus) + ["User: Assistant:"], specials)
    image_size, patch, scale = 32, 8, 2
    vision = Idefics3VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, image_size=image_size, patch_size=patch)
    text = _llama_text_config(len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=scale,
                            image_token_id=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=tokenizer.pad_token_id)
    model = Idefics3ForConditionalGeneration(config)
    image_processor = Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": image_size},
                                             max_image_size={"longest_edge": image_size})
    image_seq_len = (image_size // patch) ** 2 // (scale ** 2)
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=image_seq_len, chat_template=IDEFICS_CHAT_TEMPLATE)
    _save(model, processor, out)
    return out


def _build_qwen_vl(out: Path, corpus: Iterable[str], generation: str) -> Path:
    """Qwen2-VL ("2") or Qwen2.5-VL ("2.5"); their processors need torchvision (video processor)."""
    import transformers

    from transformers import Qwen2VLImageProcessor

    prefix = {"2": "Qwen2VL", "2.5": "Qwen2_5_VL"}[generation]
    config_class = getattr(transformers, f"{prefix}Config")
    model_class = getattr(transformers, f"{prefix}ForConditionalGeneration")
    processor_class = getattr(transformers, f"{prefix}Processor")
    specials = ["<pad>", "<s>", "</s>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>",
                "<|im_start|>", "<|im_end|>"]
    tokenizer = train_tokenizer(list(corpus) + ["user assistant"], specials)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    head_dim = 16  # mrope sections below must add up to head_dim / 2
    vision = dict(depth=2, hidden_size=64, num_heads=2, patch_size=8, spatial_merge_size=2, temporal_patch_size=2,
                  in_channels=3)
    if generation == "2":
        vision.update(embed_dim=32, mlp_ratio=2)
    else:
        vision.update(hidden_size=32, intermediate_size=64, out_hidden_size=64, window_size=16,
                      fullatt_block_indexes=[1])
    config = config_class(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                         pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
                         tie_word_embeddings=False),
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    assert config.text_config.hidden_size // config.text_config.num_attention_heads == head_dim
    model = model_class(config)
    image_processor = Qwen2VLImageProcessor(patch_size=8, merge_size=2, temporal_patch_size=2,
                                            min_pixels=32 * 32, max_pixels=32 * 32)
    chat_template = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
                     "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
                     "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ part['text'] }}{% endif %}"
                     "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    processor = processor_class(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)
    _save(model, processor, out)
    return out


def build_qwen2_vl(out: Path, corpus: Iterable[str]) -> Path:
    return _build_qwen_vl(out, corpus, "2")


def build_qwen2_5_vl(out: Path, corpus: Iterable[str]) -> Path:
    return _build_qwen_vl(out, corpus, "2.5")


def build_llava_next(out: Path, corpus: Iterable[str]) -> Path:
    """LLaVA-NeXT: "anyres" tiling (a base view + a grid of crops per image) and a chat template."""
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessor, LlavaNextProcessor)

    tokenizer = train_tokenizer(list(corpus) + ["USER: ASSISTANT:"], ["<pad>", "<s>", "</s>", "<image>"])
    image_size, patch = 32, 8
    pinpoints = [[32, 32], [32, 64], [64, 32]]  # tall and wide images get 2 crops, square ones 1
    vision, text = _clip_llama_configs(tokenizer, image_size, patch)
    config = LlavaNextConfig(vision_config=vision, text_config=text,
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                             vision_feature_layer=-1, vision_feature_select_strategy="default",
                             image_grid_pinpoints=pinpoints, image_seq_length=(image_size // patch) ** 2)
    model = LlavaNextForConditionalGeneration(config)
    image_processor = LlavaNextImageProcessor(size={"shortest_edge": image_size}, image_grid_pinpoints=pinpoints,
                                              crop_size={"height": image_size, "width": image_size})
    chat_template = ("{% for message in messages %}{{ message['role'] | upper }}: "
                     "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>{{ '\\n' }}"
                     "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{{ ' ' }}{% endfor %}"
                     "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=chat_template)
    _save(model, processor, out)
    return out


def build_gemma3(out: Path, corpus: Iterable[str]) -> Path:
    """Gemma3: SigLIP tower, <start_of_image> expanded into soft tokens, chat template."""
    from transformers import (Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor,
                              Gemma3TextConfig, SiglipVisionConfig)

    specials = ["<pad>", "<s>", "</s>", "<start_of_image>", "<end_of_image>", "<image_soft_token>",
                "<start_of_turn>", "<end_of_turn>"]
    tokenizer = train_tokenizer(list(corpus) + ["user model"], specials,
                                named={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                       "image_token": "<image_soft_token>"})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    image_size, patch, soft_tokens = 32, 8, 4  # soft tokens: a square number below (32/8)^2
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=image_size, patch_size=patch)
    text = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                            sliding_window=64, pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"],
                            eos_token_id=ids["</s>"])
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=soft_tokens,
                          boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
                          image_token_index=ids["<image_soft_token>"])
    model = Gemma3ForConditionalGeneration(config)
    image_processor = Gemma3ImageProcessor(size={"height": image_size, "width": image_size})
    chat_template = ("{% for message in messages %}<start_of_turn>{{ message['role'] }}{{ '\\n' }}"
                     "{% for part in message['content'] %}{% if part['type'] == 'image' %}<start_of_image>"
                     "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<end_of_turn>{{ '\\n' }}{% endfor %}"
                     "{% if add_generation_prompt %}<start_of_turn>model{{ '\\n' }}{% endif %}")
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template,
                                image_seq_length=soft_tokens)
    _save(model, processor, out)
    return out


def build_mllama(out: Path, corpus: Iterable[str]) -> Path:
    """Mllama (Llama 3.2 Vision): tiled images read through cross-attention layers, plain prompt."""
    from transformers import (MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessor, MllamaProcessor,
                              MllamaTextConfig, MllamaVisionConfig)

    specials = ["<pad>", "<s>", "</s>", "<|image|>", "<|python_tag|>"]
    tokenizer = train_tokenizer(corpus, specials)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    image_size, patch = 32, 8
    vision = MllamaVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                                attention_heads=2, image_size=image_size, patch_size=patch, max_num_tiles=2,
                                supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]], intermediate_layers_indices=[0],
                                vision_output_dim=64)
    text = MllamaTextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                            cross_attention_layers=[1], max_position_embeddings=512, pad_token_id=ids["<pad>"],
                            bos_token_id=ids["<s>"], eos_token_id=ids["</s>"])
    config = MllamaConfig(vision_config=vision, text_config=text, image_token_index=ids["<|image|>"])
    model = MllamaForConditionalGeneration(config)
    image_processor = MllamaImageProcessor(size={"height": image_size, "width": image_size}, max_image_tiles=2)
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    _save(model, processor, out)
    return out


def build_paligemma(out: Path, corpus: Iterable[str]) -> Path:
    from transformers import (GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration,
                              PaliGemmaProcessor, SiglipImageProcessor, SiglipVisionConfig)

    tokenizer = train_tokenizer(corpus, ["<pad>", "<s>", "</s>", "<image>"])
    image_size, patch = 32, 8
    num_image_tokens = (image_size // patch) ** 2
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=image_size, patch_size=patch, projection_dim=64)
    text = GemmaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    config = PaliGemmaConfig(vision_config=vision, text_config=text, projection_dim=64,
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    config.vision_config.num_image_tokens = num_image_tokens
    model = PaliGemmaForConditionalGeneration(config)
    image_processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    image_processor.image_seq_length = num_image_tokens
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    _save(model, processor, out)
    return out


# ---------------------------------------------------------------------- more architectures
def build_idefics2(out: Path, corpus: Iterable[str]) -> Path:
    """Idefics2: a perceiver resampler between the vision tower and a Mistral-style decoder, chat template."""
    from transformers import (Idefics2Config, Idefics2ForConditionalGeneration, Idefics2ImageProcessor,
                              Idefics2Processor)

    specials = ["<pad>", "<s>", "</s>", "<image>", "<fake_token_around_image>", "<end_of_utterance>"]
    tokenizer = train_tokenizer(list(corpus) + ["User: Assistant:"], specials,
                                named={"image_token": "<image>", "image_boundary_token": "<fake_token_around_image>",
                                       "end_of_utterance_token": "<end_of_utterance>"})
    image_size, patch, latents = 32, 8, 4
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=image_size, patch_size=patch)
    perceiver = dict(hidden_size=64, rms_norm_eps=1e-6, resampler_n_latents=latents, resampler_depth=1, resampler_n_heads=2, resampler_head_dim=8,
                     num_key_value_heads=1)
    text = _llama_text_config(len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    config = Idefics2Config(vision_config=vision, perceiver_config=perceiver, text_config=text.to_dict(),
                            image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    model = Idefics2ForConditionalGeneration(config)
    image_processor = Idefics2ImageProcessor(do_image_splitting=False,
                                             size={"longest_edge": image_size, "shortest_edge": image_size})
    processor = Idefics2Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=latents,
                                  chat_template=IDEFICS_CHAT_TEMPLATE)
    _save(model, processor, out)
    return out


def build_chameleon(out: Path, corpus: Iterable[str]) -> Path:
    """Chameleon: images become discrete VQ tokens of the shared vocabulary; the processor appends a separator."""
    from transformers import (ChameleonConfig, ChameleonForConditionalGeneration, ChameleonImageProcessor,
                              ChameleonProcessor)

    codebook = 16
    # The VQ codes' own tokens: "IMGIMG" + the code's digits written as letters (0 -> A) + "Z".
    code_tokens = ["IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z" for code in range(codebook)]
    specials = ["<pad>", "<s>", "</s>", "<image>", "<racm3:break>", "<eoss>", "<reserved08706>"] + code_tokens
    tokenizer = train_tokenizer(corpus, specials)
    tokenizer.sep_token = "<reserved08706>"
    image_size = 32
    vq = dict(embed_dim=8, num_embeddings=codebook, latent_channels=8, resolution=image_size, base_channels=32,
              channel_multiplier=[1, 1, 1, 1], num_res_blocks=1, attn_resolutions=[])
    seq_length = (image_size // 8) ** 2  # three downsamplings
    ids = tokenizer.get_vocab()
    config = ChameleonConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                             pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, vq_config=vq, vocabulary_map=ids)
    model = ChameleonForConditionalGeneration(config)
    image_processor = ChameleonImageProcessor(size={"shortest_edge": image_size},
                                              crop_size={"height": image_size, "width": image_size})
    processor = ChameleonProcessor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=seq_length)
    _save(model, processor, out)
    return out


def build_aya_vision(out: Path, corpus: Iterable[str]) -> Path:
    """Aya Vision: SigLIP tiles + pixel-shuffle adapter into a Cohere2 decoder; its processor pads on the left."""
    from transformers import (AyaVisionConfig, AyaVisionForConditionalGeneration, AyaVisionProcessor,
                              Cohere2Config, GotOcr2ImageProcessor, SiglipVisionConfig)

    specials = ["<pad>", "<s>", "</s>", "<image>", "<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>",
                "<|IMG_LINE_BREAK|>", "TILE", "TILE_GLOBAL", "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>",
                "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>"]
    tokenizer = train_tokenizer(corpus, specials)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    image_size, patch, downsample = 32, 8, 2
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=image_size, patch_size=patch)
    text = Cohere2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         sliding_window=64, layer_types=["sliding_attention", "full_attention"],
                         pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"], eos_token_id=ids["</s>"])
    config = AyaVisionConfig(vision_config=vision, text_config=text, downsample_factor=downsample,
                             image_token_index=ids["<|IMG_PATCH|>"])
    model = AyaVisionForConditionalGeneration(config)
    image_processor = GotOcr2ImageProcessor(size={"height": image_size, "width": image_size}, max_patches=1)
    chat_template = ("{% for message in messages %}<|START_OF_TURN_TOKEN|>"
                     "{% if message['role'] == 'user' %}<|USER_TOKEN|>{% else %}<|CHATBOT_TOKEN|>{% endif %}"
                     "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
                     "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<|END_OF_TURN_TOKEN|>{% endfor %}"
                     "{% if add_generation_prompt %}<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>{% endif %}")
    processor = AyaVisionProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
                                   img_size=image_size, downsample_factor=downsample, chat_template=chat_template)
    _save(model, processor, out)
    return out


def _blip_configs(tokenizer, qformer_vocab: int, qformer_pad: int | None = None):
    """The BLIP family's tiny parts: a 2-layer vision tower, a 1-layer Q-Former, a small OPT."""
    from transformers import OPTConfig

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    qformer = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                   encoder_hidden_size=32, vocab_size=qformer_vocab, pad_token_id=qformer_pad)
    text = OPTConfig(vocab_size=len(tokenizer), hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                     num_attention_heads=4, word_embed_proj_dim=64, max_position_embeddings=512,
                     pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id)
    return dict(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(), num_query_tokens=4,
                image_token_index=tokenizer.convert_tokens_to_ids("<image>"))


def build_blip2(out: Path, corpus: Iterable[str]) -> Path:
    """BLIP-2: a Q-Former's query outputs in front of an OPT decoder; the processor inserts the image tokens."""
    from transformers import BlipImageProcessor, Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    tokenizer = train_tokenizer(corpus, ["<pad>", "<s>", "</s>", "<image>"])  # the processor names <image> itself
    config = Blip2Config(**_blip_configs(tokenizer, qformer_vocab=64))
    model = Blip2ForConditionalGeneration(config)
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                               tokenizer=tokenizer, num_query_tokens=config.num_query_tokens)
    _save(model, processor, out)
    return out


def build_instructblip(out: Path, corpus: Iterable[str]) -> Path:
    """InstructBLIP: BLIP-2 whose Q-Former also reads the prompt (its own tokenizer, qformer_input_ids)."""
    from transformers import (BlipImageProcessor, InstructBlipConfig, InstructBlipForConditionalGeneration,
                              InstructBlipProcessor)

    tokenizer = train_tokenizer(corpus, ["<pad>", "<s>", "</s>", "<image>"])
    qformer_tokenizer = train_tokenizer(corpus, ["<pad>", "<s>", "</s>"], vocab_size=300)
    config = InstructBlipConfig(**_blip_configs(tokenizer, len(qformer_tokenizer), qformer_tokenizer.pad_token_id))
    model = InstructBlipForConditionalGeneration(config)
    processor = InstructBlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                                      tokenizer=tokenizer, qformer_tokenizer=qformer_tokenizer,
                                      num_query_tokens=config.num_query_tokens)
    _save(model, processor, out)
    return out


def build_florence2(out: Path, corpus: Iterable[str]) -> Path:
    """Florence-2: a DaViT tower feeding a BART encoder-decoder; the processor writes the image tokens."""
    from transformers import (BartConfig, CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor, Florence2VisionConfig)

    tokenizer = train_tokenizer(corpus, ["<pad>", "<s>", "</s>", "<image>"], named={"image_token": "<image>"})
    image_size = 64  # DaViT downsamples 32x: a 2 x 2 grid, plus one pooled token
    vision = Florence2VisionConfig(depths=[1, 1, 1, 1], embed_dim=[16, 16, 32, 32], num_heads=[1, 1, 2, 2],
                                   num_groups=[1, 1, 2, 2], window_size=2, drop_path_rate=0.0, projection_dim=64)
    text = BartConfig(vocab_size=len(tokenizer), d_model=64, encoder_layers=2, decoder_layers=2,
                      encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                      decoder_ffn_dim=128, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.eos_token_id, forced_eos_token_id=None)
    config = Florence2Config(vision_config=vision, text_config=text.to_dict(),
                             image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    model = Florence2ForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(size={"height": image_size, "width": image_size}, do_center_crop=False)
    image_processor.image_seq_length = (image_size // 32) ** 2 + 1
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    _save(model, processor, out)
    return out


BUILDERS: dict[str, Callable[[Path, Iterable[str]], Path]] = {
    "llava": build_llava, "llava_next": build_llava_next, "idefics3": build_idefics3, "paligemma": build_paligemma,
    "gemma3": build_gemma3, "mllama": build_mllama, "qwen2_vl": build_qwen2_vl, "qwen2_5_vl": build_qwen2_5_vl,
    "idefics2": build_idefics2, "chameleon": build_chameleon, "aya_vision": build_aya_vision, "blip2": build_blip2,
    "florence2": build_florence2, "instructblip": build_instructblip,
}


def missing_requirement(architecture: str) -> str | None:
    """Why this architecture cannot be loaded here (None when it can)."""
    if architecture in TORCHVISION_ARCHITECTURES:
        try:
            import torchvision  # noqa: F401
        except Exception as exc:  # ImportError, or a CUDA build that cannot load beside a CPU torch
            return f"its processor needs torchvision, which cannot be imported here ({type(exc).__name__}: {exc})"
    return None


def build_tiny_model(architecture: str, out: str | Path, corpus: Iterable[str] | None = None,
                     seed: int = 0) -> Path:
    """Build and save a tiny model of one architecture; returns its directory."""
    if architecture not in BUILDERS:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(BUILDERS)}")
    torch.manual_seed(seed)
    out = Path(out)
    return BUILDERS[architecture](out, corpus or _DEFAULT_CORPUS.split(" . "))


def _save(model, processor, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
