"""A tiny, randomly initialised Qwen2 or Qwen3 model plus a byte-level BPE tokenizer, built offline.

Nothing is downloaded: the tokenizer is trained in-process with ``tokenizers`` on a small
synthetic corpus, the model is a random ``Qwen2ForCausalLM`` (or ``Qwen3ForCausalLM`` with
``architecture="qwen3"``: per-head q/k RMSNorm and an explicit ``head_dim``, as Qwen3's
checkpoints; any vocabulary size, e.g. Qwen's 151,936 with a tiny hidden size); both are written with
``save_pretrained`` so that verl / transformers load the directory like any hub checkpoint.

    >>> from verl_lpreg.testing.tiny_model import build_tiny_model
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

__all__ = ["ARCHITECTURES", "build_tiny_model", "CHATML_TEMPLATE", "SPECIAL_TOKENS"]

ARCHITECTURES = ("qwen2", "qwen3")

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
    architecture: str = "qwen2",
    head_dim: int | None = None,
    tie_word_embeddings: bool = True,
) -> str:
    """Build a random Qwen2/Qwen3 model and a trained byte-level BPE tokenizer in ``output_dir``.

    Deterministic for a given ``seed`` and ``corpus`` (the global torch RNG is left untouched).
    ``vocab_size`` is the model's embedding size and the tokenizer's target size (a small
    corpus may give the tokenizer fewer tokens; it never has more). ``head_dim`` (Qwen3 only)
    defaults to ``hidden_size // num_attention_heads``. Returns the directory.
    """
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r} is not supported; allowed: {', '.join(ARCHITECTURES)}")
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be >= {256 + len(SPECIAL_TOKENS)} (byte alphabet + specials)")
    if num_attention_heads % num_key_value_heads:
        raise ValueError("num_attention_heads must divide by num_key_value_heads")
    if head_dim is not None and architecture != "qwen3":
        raise ValueError("head_dim is a Qwen3 option (Qwen2's is hidden_size // num_attention_heads)")
    if head_dim is None and hidden_size % num_attention_heads:
        raise ValueError("hidden_size must divide by num_attention_heads (or give head_dim, with qwen3)")
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
    config_cls, model_cls = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM)}[
        architecture
    ]
    extra = {"head_dim": head_dim or hidden_size // num_attention_heads} if architecture == "qwen3" else {}
    config = config_cls(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        use_cache=True,
        **extra,
    )
    config.architectures = [model_cls.__name__]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config).to(torch.float32)
    model.generation_config.eos_token_id = [eos_id, pad_id]
    model.generation_config.pad_token_id = pad_id
    model.generation_config.bos_token_id = pad_id
    model.save_pretrained(output_dir, safe_serialization=True)

    with open(os.path.join(output_dir, "tiny_model_info.json"), "w") as f:
        json.dump(
            {
                "builder": "verl_lpreg.testing.tiny_model.build_tiny_model",
                "architecture": architecture,
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
