"""A tiny random Qwen2 causal LM with a locally trained tokenizer, for tests: no hub access, ever.

Runs inside .venv-trainer (it needs torch and transformers): `.venv-trainer/bin/python -m trainer.tiny OUT_DIR`
from the repository root. Imports only the standard library, tokenizers, transformers and torch.
The chat template is ChatML with Qwen2.5's default system prompt, matching LLaMA-Factory's `qwen` template.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any, Final

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

HIDDEN: Final = 64
LAYERS: Final = 2
HEADS: Final = 2
"""Head dimension 32: a size CPU attention kernels (vLLM's included) support."""
VOCAB: Final = 512
PAD: Final = "<|endoftext|>"
IM_START: Final = "<|im_start|>"
EOS: Final = "<|im_end|>"
SPECIAL_TOKENS: Final = (PAD, IM_START, EOS)
DEFAULT_SYSTEM: Final = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
CHAT_TEMPLATE: Final = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
_WORDS: Final = [
    "the",
    "a",
    "an",
    "model",
    "gateway",
    "request",
    "answer",
    "question",
    "train",
    "data",
    "token",
    "learn",
    "small",
    "tiny",
    "fast",
    "slow",
    "good",
    "bad",
    "yes",
    "no",
    "what",
    "how",
    "why",
    "when",
    "where",
    "who",
    "add",
    "sum",
    "number",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "is",
    "are",
    "was",
    "hello",
    "world",
    "please",
    "thank",
    "you",
    "system",
    "user",
    "assistant",
    "write",
    "read",
    "list",
    "name",
    "color",
    "red",
    "green",
    "blue",
    "cat",
    "dog",
]


def corpus(lines: int = 2000) -> list[str]:
    """Deterministic English-like text (word pairs, digits, punctuation) to train the tokenizer on."""
    pairs = itertools.cycle(itertools.product(_WORDS, repeat=2))
    return [f"{a} {b} {i % 97}, {b}{a[:2]}? {a.capitalize()}." for i, (a, b) in zip(range(lines), pairs, strict=False)]


def build_tokenizer(vocab: int = VOCAB) -> Any:
    """A byte-level BPE tokenizer (any text encodes) with ChatML special tokens, as a transformers tokenizer."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=alphabet)
    core.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


def build_model(tokenizer: Any, seed: int = 0) -> Any:
    """A randomly initialised Qwen2ForCausalLM sized for the tokenizer (vocabulary rounded up to 64)."""
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=-(-len(tokenizer) // 64) * 64,
        hidden_size=HIDDEN,
        intermediate_size=HIDDEN * 2,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForCausalLM(config)


def build_tiny_model(path: Path) -> Path:
    """Write the tiny model and its tokenizer to `path` (safetensors weights) and return it."""
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    return path


def main() -> None:
    """`python -m trainer.tiny OUT_DIR`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out_dir", type=Path)
    print(build_tiny_model(parser.parse_args().out_dir))


if __name__ == "__main__":
    main()
