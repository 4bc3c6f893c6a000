"""A tiny, randomly initialised Qwen2 model plus a byte-level BPE tokenizer, built offline.

Nothing is downloaded: the tokenizer is trained in-process with ``tokenizers`` on a small
synthetic corpus, the model is a random ``Qwen2ForCausalLM``; both are written with
``save_pretrained`` so that verl / transformers load the directory like any hub checkpoint.

    >>> from verl_lpreg.cpu.tiny_model import build_tiny_model
    >>> path = build_tiny_model("/tmp/tiny")          # ~0.1 s on a laptop

The tokenizer has the ChatML special tokens (``<|endoftext|>``, ``<|im_start|>``,
``<|im_end|>``) and a ChatML chat template, like Qwen2.5; digits are split one per token
(as Qwen's pre-tokenizer does), which makes small arithmetic learnable by a tiny model.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable

__all__ = ["build_tiny_model", "CHATML_TEMPLATE", "SPECIAL_TOKENS"]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Qwen2.5's template without the tool-calling branches.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_WORDS = (
    "the answer is so we get then wait but perhaps alternatively however let me solve this step by "
    "compute add subtract multiply sum total result check again first second next therefore thus "
    "a conversation between user and assistant question what is of plus minus times equals number "
    "cost fine balanced trans ere think final put your in boxed"
).split()


def _default_corpus(seed: int, n: int = 3000) -> list[str]:
    """Arithmetic prompts/answers in ChatML, LaTeX boxes and some English words."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice(["+", "-", "*"])
        val = {"+": a + b, "-": a - b, "*": a * b}[op]
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
        out.append(
            f"<|im_start|>user\nWhat is {a} {op} {b}? Put the final answer in \\boxed{{}}.<|im_end|>\n"
            f"<|im_start|>assistant\n{words}. {a} {op} {b} = {val}. The answer is \\boxed{{{val}}}.<|im_end|>\n"
        )
    out.append(" ".join(_WORDS) + " 0 1 2 3 4 5 6 7 8 9 ( ) [ ] { } \\ $ ^ _ / = + - * , . : ; ? !")
    return out


def _train_tokenizer(corpus: Iterable[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def build_tiny_model(
    output_dir: str | os.PathLike,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 2048,
) -> str:
    """Build a random Qwen2 model and a trained byte-level BPE tokenizer in ``output_dir``.

    Deterministic for a given ``seed`` and ``corpus`` (the global torch RNG is left untouched).
    ``vocab_size`` is the model's embedding size and the tokenizer's target size (a small
    corpus may give the tokenizer fewer tokens; it never has more). Returns the directory.
    """
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be >= {256 + len(SPECIAL_TOKENS)} (byte alphabet + specials)")
    if hidden_size % num_attention_heads or num_attention_heads % num_key_value_heads:
        raise ValueError("hidden_size must divide by num_attention_heads, which must divide by num_key_value_heads")
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)

    corpus = list(corpus) if corpus is not None else _default_corpus(seed)
    raw = _train_tokenizer(corpus, vocab_size)
    if raw.get_vocab_size() > vocab_size:  # cannot happen with BpeTrainer, but never build a broken pair
        raise RuntimeError(f"tokenizer has {raw.get_vocab_size()} tokens > vocab_size={vocab_size}")

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=max_position_embeddings,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(output_dir)

    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        use_cache=True,
    )
    config.architectures = ["Qwen2ForCausalLM"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config.eos_token_id = [eos_id, pad_id]
    model.generation_config.pad_token_id = pad_id
    model.generation_config.bos_token_id = pad_id
    model.save_pretrained(output_dir, safe_serialization=True)

    with open(os.path.join(output_dir, "tiny_model_info.json"), "w") as f:
        json.dump(
            {
                "builder": "verl_lpreg.cpu.tiny_model.build_tiny_model",
                "seed": seed,
                "tokenizer_vocab": len(tokenizer),
                "vocab_size": vocab_size,
                "hidden_size": hidden_size,
                "num_layers": num_layers,
            },
            f,
            indent=1,
        )
    return output_dir
