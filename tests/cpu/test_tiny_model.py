import hashlib
import os

import pytest

from verl_lpreg.testing.tiny_model import build_tiny_model


def _md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def test_build_tiny_model_loads_and_is_deterministic(tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    a = build_tiny_model(tmp_path / "a", seed=0)
    b = build_tiny_model(tmp_path / "b", seed=0)
    assert a == os.fspath(tmp_path / "a")
    for f in ("model.safetensors", "tokenizer.json"):
        assert _md5(os.path.join(a, f)) == _md5(os.path.join(b, f))

    cfg = AutoConfig.from_pretrained(a)
    assert cfg.model_type == "qwen2" and cfg.vocab_size == 512 and cfg.hidden_size == 64
    assert cfg.num_hidden_layers == 2
    tok = AutoTokenizer.from_pretrained(a)
    assert len(tok) <= cfg.vocab_size
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is 1 + 2?"}], add_generation_prompt=True, tokenize=False
    )
    assert text == "<|im_start|>user\nWhat is 1 + 2?<|im_end|>\n<|im_start|>assistant\n"
    s = "Wait, 12 + 7 = 19. The answer is \\boxed{19}."
    ids = tok(s)["input_ids"]
    assert tok.decode(ids) == s
    assert [t for t in tok.convert_ids_to_tokens(tok("123")["input_ids"])] == ["1", "2", "3"]

    model = AutoModelForCausalLM.from_pretrained(a)
    assert model.dtype == torch.float32
    out = model(torch.tensor([ids]))
    assert out.logits.shape == (1, len(ids), 512)


def test_other_seed_and_sizes(tmp_path):
    from transformers import AutoConfig

    a = build_tiny_model(tmp_path / "a", seed=0)
    c = build_tiny_model(
        tmp_path / "c", seed=1, vocab_size=400, hidden_size=32, num_layers=1, corpus=["hello world 1 + 2 = 3"] * 10
    )
    assert _md5(os.path.join(a, "model.safetensors")) != _md5(os.path.join(c, "model.safetensors"))
    cfg = AutoConfig.from_pretrained(c)
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers) == (400, 32, 1)
    with pytest.raises(ValueError):
        build_tiny_model(tmp_path / "d", vocab_size=100)
