"""The paper's validation protocol inside training (docs/method.md §8), per benchmark.

Table 1 comes from the validation that runs every 8 steps during training: AIME24 and AIME25
sampled at temperature 0.6, 16 responses a problem, mean accuracy (avg@16); MATH-500, Minerva
and OlympiadBench one greedy response. verl 0.9.1 has one global ``rollout.val_kwargs``; this
module carries per-row settings through two public hooks of its v1 trainer and agent loop:

* ``__rollout_n__``: a row field that verl's ``_validate`` and the agent loop read as the
  number of responses for that prompt;
* ``agent_name``: a row field that picks a registered agent loop. Rows of a benchmark in the
  protocol get :data:`AGENT_NAME`, a loop that runs the configured default agent loop
  (``rollout.agent.default_agent_loop``, verl's ``single_turn_agent`` unless changed) with the
  benchmark's temperature and top_p in place of ``val_kwargs``'.

The ``lp_reg`` trainer adds both fields to the validation rows (whatever the files are: one
per benchmark or one with all of them, matched by ``data_source``); rows of a benchmark
outside the protocol keep verl's ``val_kwargs`` and default agent loop. verl's metric names
are unchanged (``val-core/aime24/acc/mean@16``, ``val-core/math500/acc/mean@1``).

Configuration: hydra root key ``lp_reg_validation`` (``verl_lpreg/config/lp_reg_trainer.yaml``)::

    lp_reg_validation:
      enable: true               # false: verl's global val_kwargs for every row
      benchmarks:                # data_source -> sampling; the defaults are evaluate.PROTOCOL
        aime24: {n: 16, temperature: 0.6, top_p: 1.0}
        ...

``n >= 1``, ``temperature >= 0`` (0 = greedy), ``0 < top_p <= 1``; a benchmark name must be one
that ``data_prep`` writes or a ``data_source`` of the validation files. Anything else fails at
start-up, naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from verl_lpreg.evaluate import PROTOCOL, SamplingSpec

__all__ = ["AGENT_NAME", "CONFIG_KEY", "ValidationProtocol", "ValidationProtocolAgentLoop", "annotate_val_dataset"]

CONFIG_KEY = "lp_reg_validation"
AGENT_NAME = "lp_reg_validation"
ROLLOUT_N_FIELD = "__rollout_n__"  # verl 0.9.1: trainer_base._validate, agent_loop_tq._run_prompt
AGENT_NAME_FIELD = "agent_name"  # verl 0.9.1: AgentLoopWorker._run_agent_loop
SPEC_KEYS = ("n", "temperature", "top_p")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _spec(key: str, value: Any) -> SamplingSpec:
    if isinstance(value, SamplingSpec):
        value = {"n": value.n, "temperature": value.temperature, "top_p": value.top_p}
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must be a mapping with keys {', '.join(SPEC_KEYS)}; got {value!r}")
    unknown = sorted(str(k) for k in value if k not in SPEC_KEYS)
    missing = [k for k in SPEC_KEYS if k not in value]
    if unknown or missing:
        raise ValueError(f"{key}: unknown key(s) {unknown}, missing key(s) {missing}; allowed: {', '.join(SPEC_KEYS)}")
    n, temperature, top_p = value["n"], value["temperature"], value["top_p"]
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise ValueError(f"{key}.n={n!r} is not allowed: an integer >= 1")
    if not (_number(temperature) and temperature >= 0):
        raise ValueError(f"{key}.temperature={temperature!r} is not allowed: a number >= 0 (0 = greedy)")
    if not (_number(top_p) and 0 < top_p <= 1):
        raise ValueError(f"{key}.top_p={top_p!r} is not allowed: a number in (0, 1]")
    return SamplingSpec(n=n, temperature=float(temperature), top_p=float(top_p))


@dataclass(frozen=True)
class ValidationProtocol:
    """Per-benchmark validation sampling (hydra root key ``lp_reg_validation``).

    enable: apply it (``False``: every row is validated with verl's ``val_kwargs``).
    benchmarks: ``data_source`` -> :class:`~verl_lpreg.evaluate.SamplingSpec`; the default is the
        paper's protocol, :data:`verl_lpreg.evaluate.PROTOCOL` (the offline evaluator's too).
    """

    enable: bool = True
    benchmarks: dict[str, SamplingSpec] = field(default_factory=lambda: dict(PROTOCOL))

    def __post_init__(self) -> None:
        if not isinstance(self.enable, bool):
            raise ValueError(f"{CONFIG_KEY}.enable must be true or false; got {self.enable!r}")
        if not isinstance(self.benchmarks, Mapping):
            raise ValueError(f"{CONFIG_KEY}.benchmarks must be a mapping data_source -> {{n, temperature, top_p}}")
        specs = {str(k): _spec(f"{CONFIG_KEY}.benchmarks.{k}", v) for k, v in self.benchmarks.items()}
        object.__setattr__(self, "benchmarks", specs)

    @classmethod
    def from_config(cls, cfg: Any = None) -> ValidationProtocol:
        """From the ``lp_reg_validation`` node (DictConfig, mapping, or None = the defaults)."""
        if cfg is None:
            return cls()
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        if not isinstance(cfg, Mapping):
            raise ValueError(f"{CONFIG_KEY} must be a mapping with keys enable, benchmarks; got {cfg!r}")
        unknown = sorted(str(k) for k in cfg if k not in ("enable", "benchmarks"))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in {CONFIG_KEY}; allowed keys: enable, benchmarks")
        benchmarks = cfg.get("benchmarks")
        return cls(enable=cfg.get("enable", True), benchmarks=dict(PROTOCOL) if benchmarks is None else benchmarks)

    def check_names(self, val_sources: set[str]) -> None:
        """A benchmark must be one data_prep writes or a data_source of the validation files."""
        from verl_lpreg.data_prep.core import DATA_SOURCES

        known = set(DATA_SOURCES) | set(val_sources)
        for name in self.benchmarks:
            if name not in known:
                in_files = ", ".join(sorted(val_sources))
                raise ValueError(
                    f"{CONFIG_KEY}.benchmarks.{name}: unknown benchmark; allowed: the data_prep sources "
                    f"({', '.join(DATA_SOURCES)}) and the data sources of data.val_files ({in_files})"
                )


def annotate_val_dataset(dataset: Any, config: Any) -> dict[str, SamplingSpec]:
    """Add ``__rollout_n__`` and ``agent_name`` to every row of verl's validation dataset.

    ``dataset`` is verl's ``RLHFDataset`` (or a subclass) built from ``data.val_files``;
    ``config`` the trainer's whole config. Returns the protocol applied to the data sources
    present (empty when it is switched off). Raises ``ValueError`` for an invalid setting, an
    unknown benchmark name, rows that already carry either field, or a dataset without
    verl's ``dataframe``.
    """
    protocol = ValidationProtocol.from_config(config.get(CONFIG_KEY))
    if not protocol.enable:
        return {}
    frame = getattr(dataset, "dataframe", None)
    if frame is None or not hasattr(frame, "add_column"):
        raise ValueError(
            f"{CONFIG_KEY}: the validation dataset ({type(dataset).__name__}) has no verl RLHFDataset "
            f"dataframe to annotate; set {CONFIG_KEY}.enable=false to validate with val_kwargs only"
        )
    taken = [c for c in (ROLLOUT_N_FIELD, AGENT_NAME_FIELD) if c in frame.column_names]
    if taken:
        raise ValueError(
            f"{CONFIG_KEY}: the rows of data.val_files already set {', '.join(taken)}; "
            f"set {CONFIG_KEY}.enable=false to keep them"
        )
    sources = [str(s) for s in frame["data_source"]]
    protocol.check_names(set(sources))
    rollout = config.actor_rollout_ref.rollout
    default_loop = rollout.agent.default_agent_loop
    if default_loop == AGENT_NAME:
        raise ValueError(
            f"actor_rollout_ref.rollout.agent.default_agent_loop={AGENT_NAME!r} is not allowed: it is the "
            f"{CONFIG_KEY} wrapper, which runs the default agent loop"
        )
    specs = [protocol.benchmarks.get(s) for s in sources]
    frame = frame.add_column(ROLLOUT_N_FIELD, [spec.n if spec else int(rollout.val_kwargs.n) for spec in specs])
    dataset.dataframe = frame.add_column(AGENT_NAME_FIELD, [AGENT_NAME if spec else default_loop for spec in specs])
    return {s: protocol.benchmarks[s] for s in dict.fromkeys(sources) if s in protocol.benchmarks}


class ValidationProtocolAgentLoop:
    """Agent loop :data:`AGENT_NAME`: the default agent loop with the row's benchmark sampling.

    verl instantiates it per sample with the keyword arguments of any agent loop; it builds the
    configured ``rollout.agent.default_agent_loop`` with the same arguments and runs it with
    ``temperature`` and ``top_p`` from ``lp_reg_validation.benchmarks[data_source]``
    (``top_k`` and the rest stay ``val_kwargs``'). The row's response count travels separately
    as ``__rollout_n__``.
    """

    def __init__(self, trainer_config, **kwargs):
        import hydra
        from verl.experimental.agent_loop.agent_loop import _agent_loop_registry

        config = trainer_config.config
        self.protocol = ValidationProtocol.from_config(config.get(CONFIG_KEY))
        default_loop = config.actor_rollout_ref.rollout.agent.default_agent_loop
        self.inner = hydra.utils.instantiate(
            config=_agent_loop_registry[default_loop], trainer_config=trainer_config, **kwargs
        )

    async def run(self, sampling_params: dict[str, Any], **kwargs):
        spec = self.protocol.benchmarks[str(kwargs["data_source"])]
        return await self.inner.run({**sampling_params, "temperature": spec.temperature, "top_p": spec.top_p}, **kwargs)


def register_agent_loop() -> None:
    """Register :class:`ValidationProtocolAgentLoop` under :data:`AGENT_NAME` in verl's registry."""
    from verl.experimental.agent_loop.agent_loop import register

    register(AGENT_NAME)(ValidationProtocolAgentLoop)
