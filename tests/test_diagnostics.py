"""Tests of verl_lpreg.diagnostics: config, word -> token ids, the step metrics (docs/method.md §6)."""

from __future__ import annotations

import json
import logging
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verl_lpreg import diagnostics as D
from verl_lpreg.diagnostics import DiagnosticsConfig, WordTokenMap, compute_step_diagnostics

SPARK = ("but", "wait", "perhaps", "alternatively", "however")
NOISE = ("cost", "fine", "balanced", "ere", "trans")


# ---------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------
def test_config_defaults():
    c = DiagnosticsConfig()
    assert c.enable is True
    assert c.spark_words == SPARK and c.noise_words == NOISE
    assert c.low_prob_threshold == 0.1 and c.histogram_bins == 20


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"low_prob_threshold": 0.0}, "low_prob_threshold"),
        ({"low_prob_threshold": 1.0}, "low_prob_threshold"),
        ({"low_prob_threshold": -0.1}, "low_prob_threshold"),
        ({"low_prob_threshold": "0.1"}, "low_prob_threshold"),
        ({"low_prob_threshold": True}, "low_prob_threshold"),
        ({"histogram_bins": -1}, "histogram_bins"),
        ({"histogram_bins": 2.5}, "histogram_bins"),
        ({"histogram_bins": True}, "histogram_bins"),
        ({"histogram_bins": 100_000}, "histogram_bins"),
        ({"enable": "yes"}, "enable"),
        ({"spark_words": "but"}, "spark_words"),
        ({"spark_words": ("but", "")}, "spark_words"),
        ({"spark_words": ("but", "two words")}, "spark_words"),
        ({"spark_words": ("but", "But")}, "duplicate"),
        ({"noise_words": ("cost", 3)}, "noise_words"),
        ({"noise_words": ("cost", "wait")}, "both spark_words and noise_words"),
    ],
)
def test_config_rejects_bad_values_naming_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        DiagnosticsConfig(**kwargs)


def test_config_range_is_in_the_message():
    with pytest.raises(ValueError, match=r"open interval \(0, 1\)"):
        DiagnosticsConfig(low_prob_threshold=2)
    with pytest.raises(ValueError, match=r"\[0, 1000\]"):
        DiagnosticsConfig(histogram_bins=-3)


def test_from_config_dictconfig_lists_become_tuples():
    from omegaconf import OmegaConf

    root = OmegaConf.create(
        {"lp_reg_diagnostics": {"spark_words": ["but", "wait"], "low_prob_threshold": 0.05, "histogram_bins": 0}}
    )
    c = DiagnosticsConfig.from_config(root[D.CONFIG_KEY])
    assert c.spark_words == ("but", "wait") and isinstance(c.spark_words, tuple)
    assert c.noise_words == NOISE
    assert c.low_prob_threshold == 0.05 and c.histogram_bins == 0
    # hashable (frozen, tuples): can be used as a cache key
    hash(c)


def test_from_config_none_mapping_and_instance():
    assert DiagnosticsConfig.from_config(None) == DiagnosticsConfig()
    assert DiagnosticsConfig.from_config({"enable": False}).enable is False
    c = DiagnosticsConfig(histogram_bins=3)
    assert DiagnosticsConfig.from_config(c) is c


def test_from_config_unknown_key_names_it_and_lists_allowed():
    from omegaconf import OmegaConf

    with pytest.raises(ValueError) as e:
        DiagnosticsConfig.from_config(OmegaConf.create({"enable": True, "spark_word": ["but"]}))
    msg = str(e.value)
    assert "spark_word" in msg and D.CONFIG_KEY in msg
    for k in DiagnosticsConfig.allowed_keys():
        assert k in msg
    with pytest.raises(ValueError, match="mapping"):
        DiagnosticsConfig.from_config(["but"])


# ---------------------------------------------------------------------------------------
# word -> token ids
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A byte-level BPE (GPT-2 / Qwen style) trained in-process on a corpus with the words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(0)
    filler = ["the", "answer", "is", "we", "so", "then", "x", "equals", "two"]
    # "alternatively" only ever appears capitalised at a sentence start, "ere" never:
    vocab_words = [w for w in SPARK + NOISE if w not in ("alternatively", "ere")] + filler
    corpus = []
    for _ in range(300):
        s = " ".join(rng.choice(vocab_words) for _ in range(12))
        corpus += [s, s.capitalize() + ".", "Wait, " + s + ". But however", "Alternatively, " + s]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]
    )
    tok.train_from_iterator(corpus, trainer)
    return tok


def _expected_ids(vocab, word):
    forms = {word, word.lower(), word.capitalize(), word.upper()}
    return sorted({vocab[k] for f in forms for k in (f, "Ġ" + f) if k in vocab})


def test_word_map_byte_level_bpe(bpe_tokenizer, caplog):
    vocab = bpe_tokenizer.get_vocab()
    assert "Ġbut" in vocab and "But" in vocab  # the corpus made them single tokens
    with caplog.at_level(logging.WARNING, logger=D.__name__):
        m = WordTokenMap.from_tokenizer(bpe_tokenizer, SPARK + ("ere",), kind="spark words")
    for w in SPARK:
        assert m.by_word[w] == tuple(_expected_ids(vocab, w)), w
        assert m.by_word[w], w
    assert vocab["Ġbut"] in m.by_word["but"] and vocab["But"] in m.by_word["but"]
    # "Alternatively" is a token, " alternatively" is not: the word still maps, to what exists
    assert vocab["Alternatively"] in m.by_word["alternatively"]
    # "ere" is not in the corpus: no single token, reported once, by name
    assert m.by_word["ere"] == () and m.missing == ("ere",)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ere" in warnings[0].getMessage() and "spark words" in warnings[0].getMessage()
    # ids: sorted, unique, long, the union of the per-word ids
    assert m.ids.dtype == torch.long
    assert m.ids.tolist() == sorted({i for ids in m.by_word.values() for i in ids})
    assert len(m) == m.ids.numel()
    # every id decodes to a surface form of its word
    for w, ids in m.by_word.items():
        for i in ids:
            assert bpe_tokenizer.decode([i]).strip().lower() == w


def test_word_map_same_with_transformers_tokenizer(bpe_tokenizer):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=bpe_tokenizer)
    a = WordTokenMap.from_tokenizer(bpe_tokenizer, SPARK + NOISE)
    b = WordTokenMap.from_tokenizer(hf, SPARK + NOISE)
    assert dict(a.by_word) == dict(b.by_word)


def test_word_map_sentencepiece_marker_and_unk_is_not_a_word():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "\u2581but": 1, "BUT": 2, "wait": 3, "x": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    assert tok.encode("zebra").ids == [0]  # a single id, but the unknown token
    m = WordTokenMap.from_tokenizer(tok, ["but", "wait", "zebra"])
    assert m.by_word == {"but": (1, 2), "wait": (3,), "zebra": ()}
    assert m.missing == ("zebra",)


def test_word_map_from_ids_rejects_negative():
    with pytest.raises(ValueError, match="but"):
        WordTokenMap.from_ids({"but": [-1]})


# ---------------------------------------------------------------------------------------
# the metrics on a hand-built batch
# ---------------------------------------------------------------------------------------
SPARK_MAP = WordTokenMap.from_ids({"but": [5, 6], "wait": [7]})
NOISE_MAP = WordTokenMap.from_ids({"cost": [9]})


def hand_batch():
    """Two responses; row 0 has A = +1, row 1 A = -1; the last column is padding.

    row 0: but(p=.5)  x(.9)   wait(.04) cost(.2)  | pad
    row 1: but(.01)   cost(.08) x(.99)  x(.03)    | but (padding: must not count)
    """
    nan = float("nan")
    return dict(
        responses=torch.tensor([[5, 1, 7, 9, 0], [6, 9, 2, 3, 5]]),
        response_mask=torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]),
        old_log_probs=torch.log(torch.tensor([[0.5, 0.9, 0.04, 0.2, nan], [0.01, 0.08, 0.99, 0.03, 0.5]])),
        advantages=torch.tensor([[1.0] * 5, [-1.0] * 5]),
    )


def test_hand_batch_values():
    cfg = DiagnosticsConfig(histogram_bins=4)  # bins of 0.025 over [0, 0.1)
    out = compute_step_diagnostics(**hand_batch(), spark_map=SPARK_MAP, noise_map=NOISE_MAP, config=cfg)
    approx = lambda v: pytest.approx(v, rel=1e-5, abs=1e-7)  # noqa: E731
    # 8 valid tokens; sparks: .5, .04 (row 0), .01 (row 1); noise: .2 (row 0), .08 (row 1)
    assert out["lp_reg/spark_count"] == 3.0 and out["lp_reg/noise_count"] == 2.0
    assert out["lp_reg/spark_per_1k"] == approx(375.0)
    assert out["lp_reg/noise_per_1k"] == approx(250.0)
    assert out["lp_reg/spark_prob_mean"] == approx((0.5 + 0.04 + 0.01) / 3)
    assert out["lp_reg/noise_prob_mean"] == approx((0.2 + 0.08) / 2)
    assert out["lp_reg/adv_pos/spark_per_1k"] == approx(500.0)
    assert out["lp_reg/adv_pos/spark_prob_mean"] == approx(0.27)
    assert out["lp_reg/adv_neg/spark_per_1k"] == approx(250.0)
    assert out["lp_reg/adv_neg/spark_prob_mean"] == approx(0.01)
    assert out["lp_reg/adv_pos/noise_per_1k"] == approx(250.0)
    assert out["lp_reg/adv_pos/noise_prob_mean"] == approx(0.2)
    assert out["lp_reg/adv_neg/noise_per_1k"] == approx(250.0)
    assert out["lp_reg/adv_neg/noise_prob_mean"] == approx(0.08)
    # p < 0.1: .04 .01 .08 .03 -> 4/8; bins [0,.025) .01 | [.025,.05) .04 .03 | [.05,.075) - | [.075,.1) .08
    assert out["lp_reg/low_prob_fraction"] == approx(0.5)
    hist = [out[k] for k in D.histogram_keys(0.1, 4)]
    assert hist == [approx(1 / 8), approx(2 / 8), 0.0, approx(1 / 8)]
    assert D.histogram_keys(0.1, 4)[0] == "lp_reg/low_prob_hist/00_0.000-0.025"
    # optional inputs absent -> their keys absent
    for k in (D.ENTROPY_MEAN, D.MINP_THRESHOLD_MEAN, D.PROXY_GAP_MEAN, D.PROXY_FILTERED_FRACTION):
        assert k not in out
    assert all(type(v) is float for v in out.values())
    assert all(k.startswith("lp_reg/") for k in out)


def test_hand_batch_optional_inputs():
    b = hand_batch()
    nan = float("nan")
    entropy = torch.tensor([[1.0, 2.0, 3.0, 4.0, nan], [0.5, 0.5, 0.5, 0.5, 99.0]])
    # min-p threshold: kappa * p_max, per token
    log_thr = torch.log(torch.tensor([[0.02, 0.02, 0.01, 0.01, 1.0], [0.018, 0.018, 0.02, 0.02, 1.0]]))
    # proxy: kept tokens gain 0.1 in log space; row 0 'wait' (spark) and row 1 'cost' (noise) filtered
    proxy = b["old_log_probs"] + 0.1
    proxy[0, 2] = -1.0e4
    proxy[1, 1] = -1.0e4 - 2.3
    proxy[0, 4] = -1.0e4  # padding: ignored
    out = compute_step_diagnostics(
        **b,
        entropy=entropy,
        log_minp_threshold=log_thr,
        proxy_log_probs=proxy,
        spark_map=SPARK_MAP,
        noise_map=NOISE_MAP,
        config=DiagnosticsConfig(),
    )
    assert out["lp_reg/entropy_mean"] == pytest.approx((10.0 + 2.0) / 8)
    assert out["lp_reg/minp_threshold_mean"] == pytest.approx((0.04 + 0.02 + 0.036 + 0.04) / 8)
    assert out["lp_reg/proxy_filtered_fraction"] == pytest.approx(2 / 8)
    assert out["lp_reg/proxy_gap_mean"] == pytest.approx(0.1, rel=1e-5)
    assert out["lp_reg/spark_filtered_fraction"] == pytest.approx(1 / 3)
    assert out["lp_reg/noise_filtered_fraction"] == pytest.approx(1 / 2)
    assert all(math.isfinite(v) for v in out.values())


def test_numpy_inputs_and_int32_ids_give_the_same():
    b = hand_batch()
    ref = compute_step_diagnostics(**b, spark_map=SPARK_MAP, noise_map=NOISE_MAP, config=DiagnosticsConfig())
    as_np = {k: v.numpy() for k, v in b.items()}
    assert (
        compute_step_diagnostics(**as_np, spark_map=SPARK_MAP, noise_map=NOISE_MAP, config=DiagnosticsConfig()) == ref
    )
    b32 = dict(b, responses=b["responses"].int(), response_mask=b["response_mask"].bool())
    assert compute_step_diagnostics(**b32, spark_map=SPARK_MAP, noise_map=NOISE_MAP, config=DiagnosticsConfig()) == ref
    bf = dict(b, old_log_probs=b["old_log_probs"].double(), response_mask=b["response_mask"].float())
    out = compute_step_diagnostics(**bf, spark_map=SPARK_MAP, noise_map=NOISE_MAP, config=DiagnosticsConfig())
    assert out == pytest.approx(ref)


def test_all_masked_is_nan_free_counts_zero_means_omitted():
    b = hand_batch()
    b["response_mask"] = torch.zeros_like(b["response_mask"])
    out = compute_step_diagnostics(
        **b,
        entropy=torch.ones(2, 5),
        proxy_log_probs=torch.zeros(2, 5),
        log_minp_threshold=torch.zeros(2, 5),
        spark_map=SPARK_MAP,
        noise_map=NOISE_MAP,
        config=DiagnosticsConfig(),
    )
    assert all(math.isfinite(v) for v in out.values())
    assert out["lp_reg/spark_count"] == 0.0 and out["lp_reg/spark_per_1k"] == 0.0
    assert out["lp_reg/low_prob_fraction"] == 0.0 and out["lp_reg/proxy_filtered_fraction"] == 0.0
    for k in out:
        assert not k.endswith("_mean"), k  # every mean is undefined -> omitted
    assert "lp_reg/spark_filtered_fraction" not in out


def test_zero_size_batch():
    empty = torch.zeros(0, 7)
    out = compute_step_diagnostics(
        responses=empty.long(),
        response_mask=empty,
        old_log_probs=empty,
        advantages=empty,
        entropy=empty,
        spark_map=SPARK_MAP,
        noise_map=NOISE_MAP,
        config=DiagnosticsConfig(),
    )
    assert out[D.SPARK_PER_1K] == 0.0 and D.ENTROPY_MEAN not in out


def test_disabled_returns_empty():
    out = compute_step_diagnostics(
        **hand_batch(), spark_map=SPARK_MAP, noise_map=NOISE_MAP, config=DiagnosticsConfig(enable=False)
    )
    assert out == {}


def test_no_histogram_when_bins_zero():
    out = compute_step_diagnostics(
        **hand_batch(), spark_map=SPARK_MAP, noise_map=NOISE_MAP, config=DiagnosticsConfig(histogram_bins=0)
    )
    assert not any(k.startswith(D.LOW_PROB_HIST) for k in out)
    assert out[D.LOW_PROB_FRACTION] == pytest.approx(0.5)


def test_shape_and_dtype_errors_name_the_input():
    b = hand_batch()
    with pytest.raises(ValueError, match="advantages"):
        compute_step_diagnostics(
            **dict(b, advantages=torch.zeros(2, 4)),
            spark_map=SPARK_MAP,
            noise_map=NOISE_MAP,
            config=DiagnosticsConfig(),
        )
    with pytest.raises(ValueError, match="entropy"):
        compute_step_diagnostics(
            **b, entropy=torch.zeros(5, 2), spark_map=SPARK_MAP, noise_map=NOISE_MAP, config=DiagnosticsConfig()
        )
    with pytest.raises(ValueError, match="responses"):
        compute_step_diagnostics(
            **dict(b, responses=b["responses"].float()),
            spark_map=SPARK_MAP,
            noise_map=NOISE_MAP,
            config=DiagnosticsConfig(),
        )


def test_overlapping_spark_and_noise_ids_rejected():
    with pytest.raises(ValueError, match="both spark and noise"):
        compute_step_diagnostics(
            **hand_batch(),
            spark_map=SPARK_MAP,
            noise_map=WordTokenMap.from_ids({"cost": [5]}),
            config=DiagnosticsConfig(),
        )


def test_ids_outside_the_table_negative_and_huge():
    b = hand_batch()
    b["responses"][1, 2] = 151_000  # beyond every word id: table grows, not a word
    b["responses"][1, 3] = -3  # negative (never a word)
    out = compute_step_diagnostics(**b, spark_map=SPARK_MAP, noise_map=NOISE_MAP, config=DiagnosticsConfig())
    assert out[D.SPARK_COUNT] == 3.0 and out[D.NOISE_COUNT] == 2.0
    b["responses"][1, 2] = 1 << 40  # far beyond: the clamp path
    out2 = compute_step_diagnostics(**b, spark_map=SPARK_MAP, noise_map=NOISE_MAP, config=DiagnosticsConfig())
    assert out2 == out


def test_metric_names_lists_every_key():
    b = hand_batch()
    cfg = DiagnosticsConfig()
    out = compute_step_diagnostics(
        **b,
        entropy=torch.ones(2, 5),
        proxy_log_probs=b["old_log_probs"],
        log_minp_threshold=torch.zeros(2, 5),
        spark_map=SPARK_MAP,
        noise_map=NOISE_MAP,
        config=cfg,
    )
    assert set(out) == set(D.metric_names(cfg))  # every spark/noise split is non-empty here
    assert set(D.metric_names(cfg, entropy=False, proxy=False, minp_threshold=False)) >= set(
        compute_step_diagnostics(**b, spark_map=SPARK_MAP, noise_map=NOISE_MAP, config=cfg)
    )
    assert D.metric_names(DiagnosticsConfig(enable=False)) == []


@pytest.mark.parametrize("thr, bins", [(0.1, 20), (0.1, 3), (0.001, 7), (0.5, 150), (1e-6, 10)])
def test_histogram_keys_distinct_sorted_and_parse(thr, bins):
    from verl_lpreg.plot import LOW_PROB_HIST_PATTERN

    keys = D.histogram_keys(thr, bins)
    assert len(set(keys)) == bins and keys == sorted(keys)
    for i, k in enumerate(keys):
        m = LOW_PROB_HIST_PATTERN.match(k)
        assert m, k
        assert int(m["i"]) == i
        width = thr / bins
        assert float(m["lo"]) == pytest.approx(i * width, abs=0.01 * width)
        assert float(m["hi"]) == pytest.approx((i + 1) * width, abs=0.01 * width)


def test_plot_metric_table_matches_these_names():
    from verl_lpreg.plot import METRICS

    assert D.SPARK_PER_1K in METRICS["spark_per_1k"] and D.NOISE_PER_1K in METRICS["noise_per_1k"]
    assert D.SPARK_PROB_MEAN in METRICS["spark_prob_mean"] and D.NOISE_PROB_MEAN in METRICS["noise_prob_mean"]
    assert D.MINP_THRESHOLD_MEAN in METRICS["minp_threshold_mean"]
    assert D.LOW_PROB_FRACTION in METRICS["low_prob_fraction"]
    assert D.ENTROPY_MEAN in METRICS["entropy"]


# ---------------------------------------------------------------------------------------
# the returned dict goes through verl's loggers unchanged
# ---------------------------------------------------------------------------------------
def test_verl_loggers_accept_the_metrics(tmp_path, monkeypatch, capsys):
    from tensorboard.backend.event_processing import event_accumulator
    from verl.utils.logger.aggregate_logger import LocalLogger
    from verl.utils.tracking import FileLogger, _TensorboardAdapter

    out = compute_step_diagnostics(
        **hand_batch(), entropy=torch.ones(2, 5), spark_map=SPARK_MAP, noise_map=NOISE_MAP, config=DiagnosticsConfig()
    )
    monkeypatch.setenv("TENSORBOARD_DIR", str(tmp_path / "tb"))
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(tmp_path / "log.jsonl"))
    tb = _TensorboardAdapter("p", "e")
    tb.log(out, step=3)  # an ndarray value would assert here
    tb.finish()
    fl = FileLogger("p", "e")
    fl.log(out, step=3)
    fl.finish()
    LocalLogger().log(out, step=3)
    assert "lp_reg/spark_per_1k:375.0" in capsys.readouterr().out

    acc = event_accumulator.EventAccumulator(str(tmp_path / "tb"), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == set(out)
    for k, v in out.items():
        assert acc.Scalars(k)[0].value == pytest.approx(v, rel=1e-6)
    rec = json.loads((tmp_path / "log.jsonl").read_text())
    assert rec == {"step": 3, "data": out}


# ---------------------------------------------------------------------------------------
# property tests against a plain-Python reference
# ---------------------------------------------------------------------------------------
def reference(responses, mask, lp, adv, entropy, proxy, lthr, spark_ids, noise_ids, cfg):
    """Token-by-token restatement of the definitions (module docstring)."""
    B, R = responses.shape
    toks = [(b, r) for b in range(B) for r in range(R) if mask[b, r] != 0]
    n = len(toks)
    out = {}
    log_thr = math.log(cfg.low_prob_threshold)
    split_n = {"adv_pos": sum(adv[t] > 0 for t in toks), "adv_neg": sum(adv[t] < 0 for t in toks)}
    for kind, ids in (("spark", spark_ids), ("noise", noise_ids)):
        sel = [t for t in toks if int(responses[t]) in ids]
        out[f"lp_reg/{kind}_count"] = float(len(sel))
        out[f"lp_reg/{kind}_per_1k"] = 1000 * len(sel) / n if n else 0.0
        if sel:
            out[f"lp_reg/{kind}_prob_mean"] = sum(math.exp(lp[t]) for t in sel) / len(sel)
        for split, keep in (("adv_pos", lambda a: a > 0), ("adv_neg", lambda a: a < 0)):
            s = [t for t in sel if keep(adv[t])]
            out[f"lp_reg/{split}/{kind}_per_1k"] = 1000 * len(s) / split_n[split] if split_n[split] else 0.0
            if s:
                out[f"lp_reg/{split}/{kind}_prob_mean"] = sum(math.exp(lp[t]) for t in s) / len(s)
    low = [t for t in toks if torch.tensor(lp[t], dtype=torch.float32) < log_thr]
    out["lp_reg/low_prob_fraction"] = len(low) / n if n else 0.0
    if cfg.histogram_bins:
        counts = [0] * cfg.histogram_bins
        for t in low:  # same float32 arithmetic as the vectorised code, to agree at bin edges
            p = torch.tensor(lp[t], dtype=torch.float32).exp()
            counts[min(int((p * (cfg.histogram_bins / cfg.low_prob_threshold)).long()), cfg.histogram_bins - 1)] += 1
        for k, c in zip(D.histogram_keys(cfg.low_prob_threshold, cfg.histogram_bins), counts, strict=True):
            out[k] = c / n if n else 0.0
    if entropy is not None and n:
        out["lp_reg/entropy_mean"] = sum(entropy[t] for t in toks) / n
    if lthr is not None and n:
        out["lp_reg/minp_threshold_mean"] = sum(math.exp(lthr[t]) for t in toks) / n
    if proxy is not None:
        kept = [t for t in toks if proxy[t] >= D.FILTERED_LOG_PROB]
        out["lp_reg/proxy_filtered_fraction"] = (n - len(kept)) / n if n else 0.0
        if kept:
            out["lp_reg/proxy_gap_mean"] = sum(proxy[t] - lp[t] for t in kept) / len(kept)
        for kind, ids in (("spark", spark_ids), ("noise", noise_ids)):
            sel = [t for t in toks if int(responses[t]) in ids]
            if sel:
                out[f"lp_reg/{kind}_filtered_fraction"] = sum(proxy[t] < D.FILTERED_LOG_PROB for t in sel) / len(sel)
    return out


@st.composite
def batches(draw):
    B = draw(st.integers(0, 4))
    R = draw(st.integers(0, 6))
    n = B * R
    f32 = dict(width=32, allow_nan=False, allow_infinity=False)
    ids = draw(st.lists(st.integers(-2, 12), min_size=n, max_size=n))
    mask = draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n))
    lp = draw(st.lists(st.floats(-12.0, 0.0, **f32), min_size=n, max_size=n))
    adv = draw(st.lists(st.sampled_from([-1.5, -0.25, 0.0, 0.5, 2.0]), min_size=n, max_size=n))
    optional = draw(st.booleans())
    ent = draw(st.lists(st.floats(0.0, 5.0, **f32), min_size=n, max_size=n))
    gap = draw(st.lists(st.one_of(st.floats(0.0, 3.0, **f32), st.just(None)), min_size=n, max_size=n))
    lthr = draw(st.lists(st.floats(-8.0, 0.0, **f32), min_size=n, max_size=n))
    nan_pad = draw(st.booleans())
    bins = draw(st.sampled_from([0, 1, 5, 20]))
    thr = draw(st.sampled_from([0.05, 0.1, 0.3]))

    def t(x, dtype):
        return torch.tensor(x, dtype=dtype).reshape(B, R)

    lp_t = t(lp, torch.float32)
    proxy = torch.where(
        t([g is None for g in gap], torch.bool),
        torch.full_like(lp_t, -1.0e4),
        lp_t + t([g or 0.0 for g in gap], torch.float32),
    )
    mask_t = t(mask, torch.int64)
    pad = mask_t == 0
    batch = dict(
        responses=t(ids, torch.int64),
        response_mask=mask_t,
        old_log_probs=lp_t.masked_fill(pad, float("nan")) if nan_pad else lp_t,
        advantages=t(adv, torch.float32),
    )
    if optional:
        ent_t = t(ent, torch.float32)
        batch["entropy"] = ent_t.masked_fill(pad, float("nan")) if nan_pad else ent_t
        batch["proxy_log_probs"] = proxy
        batch["log_minp_threshold"] = t(lthr, torch.float32)
    return batch, DiagnosticsConfig(histogram_bins=bins, low_prob_threshold=thr)


SPARK_IDS = {1, 2, 3}
NOISE_IDS = {4, 11}
H_SPARK = WordTokenMap.from_ids({"but": [1, 2], "wait": [3]})
H_NOISE = WordTokenMap.from_ids({"cost": [4], "fine": [11]})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_matches_reference_and_is_nan_free(case):
    batch, cfg = case
    out = compute_step_diagnostics(**batch, spark_map=H_SPARK, noise_map=H_NOISE, config=cfg)
    as_np = {k: v.double().numpy() if v.is_floating_point() else v.numpy() for k, v in batch.items()}
    ref = reference(
        as_np["responses"],
        as_np["response_mask"],
        as_np["old_log_probs"],
        as_np["advantages"],
        as_np.get("entropy"),
        as_np.get("proxy_log_probs"),
        as_np.get("log_minp_threshold"),
        SPARK_IDS,
        NOISE_IDS,
        cfg,
    )
    assert set(out) == set(ref)
    for k, v in out.items():
        assert type(v) is float and math.isfinite(v), k
        assert v == pytest.approx(ref[k], rel=1e-4, abs=1e-5), k
    # invariants
    hist = [out[k] for k in D.histogram_keys(cfg.low_prob_threshold, cfg.histogram_bins)]
    if hist:
        assert sum(hist) == pytest.approx(out[D.LOW_PROB_FRACTION], abs=1e-9)
    assert 0.0 <= out[D.LOW_PROB_FRACTION] <= 1.0
    for k in (D.SPARK_PER_1K, D.NOISE_PER_1K):
        assert 0.0 <= out[k] <= 1000.0
    assert (D.SPARK_PROB_MEAN in out) == (out[D.SPARK_COUNT] > 0)
    if D.SPARK_PROB_MEAN in out:
        assert 0.0 <= out[D.SPARK_PROB_MEAN] <= 1.0 + 1e-6


def test_vectorised_cost_is_linear_not_per_token_python():
    """A coarse guard against a Python loop over tokens: 1M tokens well under a few seconds."""
    import time

    g = torch.Generator().manual_seed(0)
    B, R = 256, 4096
    batch = dict(
        responses=torch.randint(0, 1000, (B, R), generator=g),
        response_mask=torch.ones(B, R, dtype=torch.long),
        old_log_probs=-torch.rand(B, R, generator=g) * 5,
        advantages=torch.randn(B, R, generator=g),
        entropy=torch.rand(B, R, generator=g),
    )
    t0 = time.perf_counter()
    out = compute_step_diagnostics(**batch, spark_map=H_SPARK, noise_map=H_NOISE, config=DiagnosticsConfig())
    assert time.perf_counter() - t0 < 10.0
    assert out[D.SPARK_COUNT] > 0
    np.testing.assert_allclose(out[D.ENTROPY_MEAN], float(batch["entropy"].mean()), rtol=1e-5)
