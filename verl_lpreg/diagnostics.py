"""Lp-Reg step diagnostics: the quantities the paper plots (docs/method.md §6), as scalar step metrics.

Once per training step, after advantages are computed, the trainer calls
:func:`compute_step_diagnostics` on the padded batch and merges the returned dict into
verl's step metrics, which go to every configured logger (wandb, tensorboard, console,
file, mlflow, ...). Everything here is a pure function of the batch; nothing is stored.

Why these quantities (docs/method.md §1, §6): Lp-Reg claims that low-probability *reasoning sparks*
("wait", "but", "perhaps", "alternatively", "however") are driven towards zero by negative
advantages under plain GRPO, and that an entropy bonus revives them together with *noise*
tokens ("cost", "fine", "balanced", "ere", "trans"). The paper therefore tracks, per step:
policy entropy, how often spark and noise words are sampled and with which probability,
the share of tokens Lp-Reg regularises (logged by the loss, not here), the min-p
threshold ``kappa * p_max`` of the proxy (docs/method.md §2), and the distribution of the
probabilities of low-probability sampled tokens.

Definitions (all metric names share the prefix ``lp_reg/``; see ``DIAGNOSTICS.md``):

* A *valid* token is a response position with ``response_mask != 0``. ``N`` is their number.
* ``p`` is ``exp(old_log_probs)``: the probability pi_old gave the sampled token, at the
  rollout temperature (what verl's ``_compute_old_log_prob`` writes).
* A token is a *spark* (*noise*) token if its id is one of the single-token ids of a
  configured spark (noise) word, in any of its surface forms (see :class:`WordTokenMap`).
* ``adv_pos`` / ``adv_neg`` select valid tokens with ``advantages > 0`` / ``< 0``;
  tokens with a zero advantage (e.g. GRPO groups whose rewards are all equal) are in
  neither split.
* ``*_per_1k`` = 1000 * (number of selected spark/noise tokens) / (number of valid
  tokens in the same split). ``0.0`` when the split is empty.
* ``*_prob_mean`` = mean of ``p`` over the sampled spark/noise tokens of the split.
  **Omitted** (key absent) when there is no such token: a mean over nothing is undefined,
  and a 0 would draw a fake collapse in a plot. Counts and fractions are always present
  (0.0 on an empty selection), so the key set only varies for means.
* ``low_prob_fraction`` = share of valid tokens with ``p < low_prob_threshold``.
* ``low_prob_hist/<ii>_<lo>-<hi>`` = share of *valid* tokens whose ``p`` is in
  ``[lo, hi)``; the bins split ``[0, low_prob_threshold)`` evenly, so the bins sum to
  ``low_prob_fraction``. Scalars, not an array: verl's TensorBoard adapter asserts on a
  non-scalar value (it would crash the step's logging), wandb turns an array of more than
  32 values into a histogram *of the values*, the console logger and ClearML drop it, and
  mlflow expects numbers (verl's mlflow adapter logs the step's dict in one call, so a
  failure there would lose the whole step).
* ``minp_threshold_mean`` = mean of ``exp(log_minp_threshold)`` (``kappa * p_max``, or
  ``kappa`` in ``fixed`` mode) over valid tokens, when given.
* ``proxy_filtered_fraction`` = share of valid tokens the min-p filter removed (proxy
  log-prob below :data:`FILTERED_LOG_PROB`, i.e. the hard filter's ~-1e4; docs/method.md §2).
  ``spark_filtered_fraction`` / ``noise_filtered_fraction``: the same among spark / noise
  tokens (omitted when there is none). The trainer passes ``proxy_removed``, the exact
  mask from the proxy pass (docs/method.md §2), which also covers the ``soft`` filter, whose removed
  tokens keep a finite log-prob; without it the -1e4 fill is detected.
* ``proxy_gap_mean`` = mean of ``proxy_log_probs - old_log_probs`` over valid tokens the
  filter *kept* (>= 0: minus the log of the kept probability mass). Filtered tokens are
  excluded, their ~-1e4 would swamp the mean. Omitted when no valid token was kept.
* ``entropy_mean`` = mean pi_old entropy over valid tokens, when given.

The computation is vectorised: one lookup-table gather classifies every token, the rare
spark/noise positions are gathered into small tensors for the per-split statistics, and
the histogram is a ``bincount``. See ``benchmarks/bench_diagnostics.py`` for its cost.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from verl.base_config import BaseConfig

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_KEY",
    "PREFIX",
    "FILTERED_LOG_PROB",
    "DiagnosticsConfig",
    "WordTokenMap",
    "compute_step_diagnostics",
    "histogram_keys",
    "metric_names",
]

#: Hydra root key the config is read from.
CONFIG_KEY = "lp_reg_diagnostics"
#: Every metric returned by :func:`compute_step_diagnostics` starts with this.
PREFIX = "lp_reg/"
#: A proxy log-prob below this is a token removed by the hard min-p filter (docs/method.md §2 sets
#: removed logits to -1e4, so such a token's proxy log-prob is about -1e4 / T).
FILTERED_LOG_PROB = -1.0e3

# ---- metric names (one table; plot.py's table must agree, a test checks it) ----------
SPARK_COUNT = PREFIX + "spark_count"
NOISE_COUNT = PREFIX + "noise_count"
SPARK_PER_1K = PREFIX + "spark_per_1k"
NOISE_PER_1K = PREFIX + "noise_per_1k"
SPARK_PROB_MEAN = PREFIX + "spark_prob_mean"
NOISE_PROB_MEAN = PREFIX + "noise_prob_mean"
ADV_SPLITS = ("adv_pos", "adv_neg")
LOW_PROB_FRACTION = PREFIX + "low_prob_fraction"
LOW_PROB_HIST = PREFIX + "low_prob_hist"  # family: LOW_PROB_HIST + "/<ii>_<lo>-<hi>"
MINP_THRESHOLD_MEAN = PREFIX + "minp_threshold_mean"
PROXY_GAP_MEAN = PREFIX + "proxy_gap_mean"
PROXY_FILTERED_FRACTION = PREFIX + "proxy_filtered_fraction"
SPARK_FILTERED_FRACTION = PREFIX + "spark_filtered_fraction"
NOISE_FILTERED_FRACTION = PREFIX + "noise_filtered_fraction"
ENTROPY_MEAN = PREFIX + "entropy_mean"


def _split_key(split: str, name: str) -> str:
    return f"{PREFIX}{split}/{name}"


# ---------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------
_MAX_BINS = 1000


def _check_words(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{CONFIG_KEY}.{key} must be a list of words, e.g. [but, wait]; got {value!r}")
    words = tuple(value)
    for w in words:
        if not isinstance(w, str) or not w.strip() or any(c.isspace() for c in w):
            raise ValueError(f"{CONFIG_KEY}.{key}: every entry must be a non-empty word without whitespace; got {w!r}")
    lowered = [w.lower() for w in words]
    dups = sorted({w for w in lowered if lowered.count(w) > 1})
    if dups:
        raise ValueError(f"{CONFIG_KEY}.{key}: duplicate word(s) (case-insensitive): {dups}")
    return words


@dataclasses.dataclass(unsafe_hash=True)  # BaseConfig freezes every field: safe to hash
class DiagnosticsConfig(BaseConfig):
    """Settings of the Lp-Reg diagnostics (hydra root key ``lp_reg_diagnostics``).

    Attributes:
        enable: compute the diagnostics at all (``False``: :func:`compute_step_diagnostics`
            returns ``{}``).
        spark_words: the paper's "reasoning sparks" (docs/method.md §1).
        noise_words: the paper's noise tokens (docs/method.md §1). Must not share a word with
            ``spark_words``.
        low_prob_threshold: ``p`` below which a sampled token counts as low-probability,
            in (0, 1).
        histogram_bins: number of bins over ``[0, low_prob_threshold)``, in [0, 1000];
            0 turns the histogram off.
    """

    enable: bool = True
    spark_words: tuple[str, ...] = ("but", "wait", "perhaps", "alternatively", "however")
    noise_words: tuple[str, ...] = ("cost", "fine", "balanced", "ere", "trans")
    low_prob_threshold: float = 0.1
    histogram_bins: int = 20

    def __post_init__(self) -> None:
        if not isinstance(self.enable, bool):
            raise ValueError(f"{CONFIG_KEY}.enable must be true or false; got {self.enable!r}")
        spark = _check_words("spark_words", self.spark_words)
        noise = _check_words("noise_words", self.noise_words)
        both = sorted({w.lower() for w in spark} & {w.lower() for w in noise})
        if both:
            raise ValueError(
                f"{CONFIG_KEY}: word(s) {both} are in both spark_words and noise_words; a word must be one or the other"
            )
        object.__setattr__(self, "spark_words", spark)
        object.__setattr__(self, "noise_words", noise)

        thr = self.low_prob_threshold
        if isinstance(thr, bool) or not isinstance(thr, int | float) or not (0.0 < float(thr) < 1.0):
            raise ValueError(
                f"{CONFIG_KEY}.low_prob_threshold must be a number in the open interval (0, 1); got {thr!r}"
            )
        object.__setattr__(self, "low_prob_threshold", float(thr))

        bins = self.histogram_bins
        if isinstance(bins, bool) or not isinstance(bins, int) or not (0 <= bins <= _MAX_BINS):
            raise ValueError(
                f"{CONFIG_KEY}.histogram_bins must be an integer in [0, {_MAX_BINS}] (0 = no histogram); got {bins!r}"
            )

    @classmethod
    def allowed_keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "_target_")

    @classmethod
    def from_config(cls, cfg: Any = None) -> DiagnosticsConfig:
        """Build from the ``lp_reg_diagnostics`` node (OmegaConf DictConfig, a mapping, or None).

        Lists become tuples; an unknown key is an error that names it and lists the
        allowed keys. ``None`` (node absent) gives the defaults.
        """
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        try:
            from omegaconf import DictConfig, ListConfig, OmegaConf
        except ImportError:  # pragma: no cover - omegaconf ships with verl
            DictConfig = ListConfig = ()  # type: ignore[assignment]
            OmegaConf = None  # type: ignore[assignment]
        if OmegaConf is not None and isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        if not isinstance(cfg, Mapping):
            raise ValueError(f"{CONFIG_KEY} must be a mapping of settings; got {type(cfg).__name__}")
        allowed = cls.allowed_keys()
        cfg = {k: v for k, v in cfg.items() if k != "_target_"}
        unknown = sorted(str(k) for k in cfg if k not in allowed)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in {CONFIG_KEY}; allowed keys: {', '.join(allowed)}")
        kwargs = {}
        for k, v in cfg.items():
            if OmegaConf is not None and isinstance(v, ListConfig):
                v = OmegaConf.to_container(v, resolve=True)
            if k in ("spark_words", "noise_words") and isinstance(v, list):
                v = tuple(v)
            kwargs[k] = v
        return cls(**kwargs)


# ---------------------------------------------------------------------------------------
# word -> token ids
# ---------------------------------------------------------------------------------------
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable-unicode table used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


_BYTE_LEVEL = _bytes_to_unicode()


def _byte_level(text: str) -> str:
    return "".join(_BYTE_LEVEL[b] for b in text.encode("utf-8"))


def _surface_forms(word: str) -> list[str]:
    return list(dict.fromkeys([word, word.lower(), word.capitalize(), word.upper(), word.title()]))


def _encode(tokenizer: Any, text: str) -> list[int]:
    try:
        out = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:
        out = tokenizer.encode(text)
    ids = getattr(out, "ids", out)  # tokenizers.Tokenizer returns an Encoding
    return [int(i) for i in ids]


def _decode(tokenizer: Any, token_id: int) -> str | None:
    try:
        return tokenizer.decode([token_id])
    except Exception:  # pragma: no cover - exotic tokenizers
        return None


@dataclasses.dataclass(frozen=True, eq=False)
class WordTokenMap:
    """The single-token ids a set of words can be sampled as.

    Attributes:
        words: the words, in configuration order.
        by_word: word -> sorted tuple of its token ids (empty tuple: no single token).
        ids: all ids, sorted and unique (``torch.long``).
        missing: words without any single-token id (they can never be counted).
    """

    words: tuple[str, ...]
    by_word: Mapping[str, tuple[int, ...]]
    ids: torch.Tensor
    missing: tuple[str, ...]

    @classmethod
    def from_ids(cls, by_word: Mapping[str, Iterable[int]]) -> WordTokenMap:
        table = {w: tuple(sorted({int(i) for i in ids})) for w, ids in by_word.items()}
        for w, ids in table.items():
            if any(i < 0 for i in ids):
                raise ValueError(f"word {w!r}: token ids must be >= 0; got {ids}")
        all_ids = sorted({i for ids in table.values() for i in ids})
        return cls(
            words=tuple(table),
            by_word=table,
            ids=torch.tensor(all_ids, dtype=torch.long),
            missing=tuple(w for w, ids in table.items() if not ids),
        )

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, words: Iterable[str], *, kind: str = "words") -> WordTokenMap:
        """Map each word to every single token id it can take.

        Surface forms: the word as given, lower-case, Capitalised, UPPER and Title case, each
        with and without a leading space. An id is collected when

        * the vocabulary holds the form verbatim, with the byte-level BPE space marker
          (``"Ġ" + form``) or with the SentencePiece one (``"▁" + form``): the model can
          sample such a token even where the tokenizer would encode the text otherwise; or
        * encoding the form (with or without a leading space) gives exactly one id and that
          id decodes back to the form (which rules out ``<unk>``-style ids).

        Works with a ``transformers`` tokenizer or a raw ``tokenizers.Tokenizer``. Run it
        once at start-up (it reads the vocabulary). Words with no single-token id are
        reported in one warning; they are kept in ``missing`` and simply never counted.
        """
        words = tuple(words)
        vocab = tokenizer.get_vocab()
        by_word: dict[str, tuple[int, ...]] = {}
        for word in words:
            found: set[int] = set()
            forms = _surface_forms(word)
            for form in forms:
                for key in (form, _byte_level(" " + form), "\u2581" + form):
                    if key in vocab:
                        found.add(int(vocab[key]))
                for text in (form, " " + form):
                    ids = _encode(tokenizer, text)
                    if len(ids) == 1 and ids[0] not in found:
                        decoded = _decode(tokenizer, ids[0])
                        if decoded is not None and decoded.strip() == form:
                            found.add(ids[0])
            by_word[word] = tuple(sorted(found))
        out = cls.from_ids(by_word)
        if out.missing:
            logger.warning(
                "lp_reg diagnostics: %s %s never map to a single token of this tokenizer; they will not be counted",
                kind,
                list(out.missing),
            )
        logger.info(
            "lp_reg diagnostics: %s -> token ids %s",
            kind,
            {w: list(ids) for w, ids in out.by_word.items()},
        )
        return out

    def __len__(self) -> int:
        return int(self.ids.numel())


# ---------------------------------------------------------------------------------------
# the step metrics
# ---------------------------------------------------------------------------------------
def histogram_keys(threshold: float, bins: int) -> list[str]:
    """Names of the ``low_prob_hist`` bins: ``lp_reg/low_prob_hist/<ii>_<lo>-<hi>``.

    ``ii`` is the zero-padded bin index (so names sort in bin order), ``lo``/``hi`` the
    bin edges in probability, printed with the fewest decimals (at least 3) that keep each
    edge within 1% of a bin width, e.g. ``lp_reg/low_prob_hist/00_0.000-0.005``.
    """
    if bins <= 0:
        return []
    width = threshold / bins
    edges = [i * width for i in range(bins + 1)]
    decimals = 3  # fewest decimals that print every edge to within 1% of a bin width
    while decimals < 15 and any(abs(round(e, decimals) - e) > 0.01 * width for e in edges):
        decimals += 1
    pad = max(2, len(str(bins - 1)))
    return [f"{LOW_PROB_HIST}/{i:0{pad}d}_{i * width:.{decimals}f}-{(i + 1) * width:.{decimals}f}" for i in range(bins)]


def metric_names(
    config: DiagnosticsConfig | None = None,
    *,
    entropy: bool = True,
    proxy: bool = True,
    minp_threshold: bool = True,
) -> list[str]:
    """Every name :func:`compute_step_diagnostics` can return for these inputs (means included)."""
    config = config or DiagnosticsConfig()
    if not config.enable:
        return []
    names = [SPARK_COUNT, NOISE_COUNT, SPARK_PER_1K, NOISE_PER_1K, SPARK_PROB_MEAN, NOISE_PROB_MEAN]
    for split in ADV_SPLITS:
        names += [_split_key(split, n) for n in ("spark_per_1k", "noise_per_1k", "spark_prob_mean", "noise_prob_mean")]
    names.append(LOW_PROB_FRACTION)
    names += histogram_keys(config.low_prob_threshold, config.histogram_bins)
    if entropy:
        names.append(ENTROPY_MEAN)
    if minp_threshold:
        names.append(MINP_THRESHOLD_MEAN)
    if proxy:
        names += [PROXY_FILTERED_FRACTION, PROXY_GAP_MEAN, SPARK_FILTERED_FRACTION, NOISE_FILTERED_FRACTION]
    return names


def _as_tensor(name: str, x: Any, shape: torch.Size | None) -> torch.Tensor:
    t = torch.as_tensor(x)
    if shape is not None and t.shape != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)} (the shape of responses)")
    return t


_MAX_TABLE = 1 << 24  # token ids above this (never seen in practice) take the clamp path


def _class_table(spark_map: WordTokenMap, noise_map: WordTokenMap, device: torch.device) -> torch.Tensor:
    """uint8 table indexed by token id: 0 other, 1 spark, 2 noise; the last entry is a 0 sentinel."""
    overlap = set(spark_map.ids.tolist()) & set(noise_map.ids.tolist())
    if overlap:
        raise ValueError(f"token id(s) {sorted(overlap)} are both spark and noise ids")
    max_id = -1
    for m in (spark_map, noise_map):
        if m.ids.numel():
            max_id = max(max_id, int(m.ids.max()))
    table = torch.zeros(max_id + 2, dtype=torch.uint8, device=device)
    if spark_map.ids.numel():
        table[spark_map.ids.to(device)] = 1
    if noise_map.ids.numel():
        table[noise_map.ids.to(device)] = 2
    return table


def _masked_sum(x: torch.Tensor, valid: torch.Tensor, valid_f: torch.Tensor) -> float:
    """Sum of ``x`` over ``valid``: one ``dot`` (no temporary); NaN/inf padding falls back to ``where``."""
    total = float(torch.dot(x, valid_f))
    if not math.isfinite(total):
        total = float(torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum())
    return total


def _flat(name: str, x: Any, shape: torch.Size, device: torch.device) -> torch.Tensor:
    t = _as_tensor(name, x, shape).reshape(-1)
    return t.to(device=device, dtype=torch.float32)  # no copy when already float32 on device


@torch.no_grad()
def compute_step_diagnostics(
    *,
    responses: Any,
    response_mask: Any,
    old_log_probs: Any,
    advantages: Any,
    entropy: Any = None,
    proxy_log_probs: Any = None,
    log_minp_threshold: Any = None,
    proxy_removed: Any = None,
    spark_map: WordTokenMap,
    noise_map: WordTokenMap,
    config: DiagnosticsConfig,
) -> dict[str, float]:
    """The Lp-Reg diagnostics of one step (docs/method.md §6), as a flat dict of Python floats.

    All inputs are ``[B, R]`` (padded response-only tensors or numpy arrays; any common
    shape works): ``responses`` token ids, ``response_mask`` (non-zero = valid),
    ``old_log_probs`` log pi_old of the sampled token at the rollout temperature,
    ``advantages``, optionally ``entropy`` (pi_old entropy), ``proxy_log_probs`` (docs/method.md §2)
    ``log_minp_threshold`` (log ``kappa * p_max``) and ``proxy_removed`` (non-zero where the
    sampled token is outside the proxy's support). Padded positions may hold anything,
    NaN included. The definitions of every returned key are in the module docstring and in
    ``DIAGNOSTICS.md``. Returns ``{}`` when ``config.enable`` is false.

    Every value is a Python float (scalars only: see the module docstring for why the
    histogram is returned as one key per bin). Counts and fractions over an empty
    selection are 0.0; means over an empty selection are omitted.
    """
    if not config.enable:
        return {}
    ids = _as_tensor("responses", responses, None)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
        raise ValueError(f"responses must hold integer token ids; got dtype {ids.dtype}")
    shape = ids.shape
    device = ids.device
    ids = ids.reshape(-1)
    if ids.dtype not in (torch.int32, torch.int64):  # index_select takes either: no copy for those
        ids = ids.long()
    mask = _as_tensor("response_mask", response_mask, shape).reshape(-1).to(device)
    valid = mask if mask.dtype == torch.bool else mask != 0
    lp = _flat("old_log_probs", old_log_probs, shape, device)
    adv = _flat("advantages", advantages, shape, device)

    # count_nonzero: bool.sum() is several times slower on CPU
    n_valid = int(torch.count_nonzero(valid))
    n_split = {
        "adv_pos": int(torch.count_nonzero((adv > 0) & valid)),
        "adv_neg": int(torch.count_nonzero((adv < 0) & valid)),
    }
    out: dict[str, float] = {}

    # -- spark / noise tokens: classify every token with one table gather, then work on
    #    the few word positions only (gathered into small tensors)
    table = _class_table(spark_map, noise_map, device)
    if ids.numel():
        lo, hi = (int(v) for v in torch.aminmax(ids))
    else:
        lo, hi = 0, 0
    if lo >= 0 and hi < _MAX_TABLE:
        if hi >= table.numel():  # grow the table to the batch's largest id: no clamp pass
            table = torch.cat([table, table.new_zeros(hi + 1 - table.numel())])
        codes = table.index_select(0, ids)
    else:  # negative ids (never a word): map them to the 0 sentinel at the end
        codes = table[ids.clamp(-1, table.numel() - 1)]
    word_pos = torch.nonzero(codes, as_tuple=True)[0]  # sparse: then drop the padded ones
    del codes
    word_pos = word_pos[valid[word_pos]]
    w_code = table[ids[word_pos]]
    w_prob = lp[word_pos].exp()
    w_adv = adv[word_pos]
    w_split = {"adv_pos": w_adv > 0, "adv_neg": w_adv < 0}

    for code, kind in ((1, "spark"), (2, "noise")):
        is_kind = w_code == code
        count = int(torch.count_nonzero(is_kind))
        out[f"{PREFIX}{kind}_count"] = float(count)
        out[f"{PREFIX}{kind}_per_1k"] = 1000.0 * count / n_valid if n_valid else 0.0
        if count:
            out[f"{PREFIX}{kind}_prob_mean"] = float(w_prob[is_kind].sum()) / count
        for split in ADV_SPLITS:
            sel = is_kind & w_split[split]
            c = int(torch.count_nonzero(sel))
            out[_split_key(split, f"{kind}_per_1k")] = 1000.0 * c / n_split[split] if n_split[split] else 0.0
            if c:
                out[_split_key(split, f"{kind}_prob_mean")] = float(w_prob[sel].sum()) / c

    # -- low-probability tokens: compare in log space, exp only the selected ones
    thr = config.low_prob_threshold
    low = (lp < math.log(thr)) & valid
    bins = config.histogram_bins
    if bins > 0:
        p_low = lp[low].exp()
        n_low = int(p_low.numel())
        idx = (p_low * (bins / thr)).long().clamp_(0, bins - 1)
        counts = torch.bincount(idx, minlength=bins).tolist()
        for key, c in zip(histogram_keys(thr, bins), counts, strict=True):
            out[key] = c / n_valid if n_valid else 0.0
    else:
        n_low = int(torch.count_nonzero(low))
    del low
    out[LOW_PROB_FRACTION] = n_low / n_valid if n_valid else 0.0

    # -- optional per-token inputs: masked sums as one dot with the float mask
    if entropy is None and log_minp_threshold is None and proxy_log_probs is None:
        return out
    valid_f = valid.to(torch.float32)
    if entropy is not None:
        ent = _flat("entropy", entropy, shape, device)
        if n_valid:
            out[ENTROPY_MEAN] = _masked_sum(ent, valid, valid_f) / n_valid
    if log_minp_threshold is not None:
        lthr = _flat("log_minp_threshold", log_minp_threshold, shape, device)
        if n_valid:
            out[MINP_THRESHOLD_MEAN] = _masked_sum(lthr.exp(), valid, valid_f) / n_valid
    if proxy_log_probs is not None:
        proxy = _flat("proxy_log_probs", proxy_log_probs, shape, device)
        if proxy_removed is not None:
            removed = _as_tensor("proxy_removed", proxy_removed, shape).reshape(-1).to(device) != 0
        else:
            removed = proxy < FILTERED_LOG_PROB
        filt_pos = torch.nonzero(removed, as_tuple=True)[0]  # sparse
        filt_pos = filt_pos[valid[filt_pos]]
        n_kept = n_valid - int(filt_pos.numel())
        out[PROXY_FILTERED_FRACTION] = (n_valid - n_kept) / n_valid if n_valid else 0.0
        if n_kept:
            gap = (proxy - lp).index_fill_(0, filt_pos, 0.0)
            out[PROXY_GAP_MEAN] = _masked_sum(gap, valid, valid_f) / n_kept
        w_filtered = removed[word_pos]
        for code, key in ((1, SPARK_FILTERED_FRACTION), (2, NOISE_FILTERED_FRACTION)):
            is_kind = w_code == code
            c = int(torch.count_nonzero(is_kind))
            if c:
                out[key] = int(torch.count_nonzero(w_filtered & is_kind)) / c

    return out
