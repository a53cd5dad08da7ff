"""One typed configuration for an experiment, holding the paper's defaults.

Layers, later ones winning: the defaults below, a TOML or JSON file
(``--config FILE``), then ``--set section.key=value`` overrides. Every value
has exactly one home here; code reads it from the config object it is given.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    name: str = "synthetic"
    data_dir: str | None = None  # default: $FEDSCOPE_DATA_DIR
    options: dict[str, Any] = Field(default_factory=dict)  # loader options, e.g. {"seed": 1}


class PartitionConfig(_Section):
    n_clients: int = Field(50, ge=1)  # paper: K = 50
    scheme: Literal["equal", "dirichlet", "powerlaw", "by-domain", "file"] = "equal"
    # scheme "file": a CSV with columns user,client assigning every user to one client
    # (fedscope.data.partition.partition_from_file); read once, when a run is created.
    file: str | None = None
    alpha: float = Field(0.5, gt=0)  # Dirichlet concentration
    exponent: float = Field(1.0, ge=0)  # power-law exponent
    seed: int = 0

    @model_validator(mode="after")
    def _file_with_its_scheme(self) -> PartitionConfig:
        if self.scheme == "file" and not self.file:
            raise ValueError(
                "partition.scheme is 'file' but partition.file is not set: name the CSV "
                "(columns user,client) that assigns every user to a client"
            )
        if self.file and self.scheme != "file":
            raise ValueError(
                f"partition.file is set but partition.scheme is {self.scheme!r}: the file is "
                "read only with partition.scheme=file"
            )
        return self


class ModelConfig(_Section):
    encoder: Literal["transformer", "gru"] = "transformer"
    dim: int = Field(64, ge=1)  # paper: d = 64
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(2, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)  # paper: 0.3
    max_len: int = Field(50, ge=2)  # N: the most recent interactions the encoder sees
    cross_domain_sequence: bool = True  # also encode the aggregated cross-domain sequence S*
    fusion: bool = (
        True  # the fusion MLP Enc([z; f_A]) on users and items (methods may switch it off)
    )
    # z~ = z + Enc([z; f_A]) instead of Enc([z; f_A]). Measured on the generated data set
    # (BENCHMARKS.md): the plain two-layer MLP over item embeddings cost 9 points of HR@10.
    fusion_residual: bool = True
    # Std of the item table's initial rows; None: dim**-0.5 (unit-norm rows). A rarely touched
    # item keeps its random initial logit under federated training; 0.01 starts every item
    # near zero (on Food-Kitchen: much faster first rounds, same plateau; BENCHMARKS.md).
    item_init_std: float | None = Field(None, gt=0)


class LossConfig(_Section):
    n_negatives: int = Field(1, ge=1)  # sampled negatives per target for the BCE loss
    alpha: float = Field(0.1, ge=0)  # weight of the contrastive terms
    lambda_intra: float = Field(0.5, ge=0)
    lambda_inter: float = Field(0.5, ge=0)
    intra_align: float = Field(1.0, ge=0)  # lambda^a_intra
    intra_uniform: float = Field(1.0, ge=0)  # lambda^u_intra
    inter_align: float = Field(1.0, ge=0)  # lambda^a_inter
    inter_uniform: float = Field(1.0, ge=0)  # lambda^u_inter
    tau_intra: float = Field(0.2, gt=0)
    tau_inter: float = Field(0.2, gt=0)
    rho: float = Field(0.02, gt=0, le=1)  # K = min(K_max, floor(rho * |U_d|))
    k_max: int = Field(50, ge=1)
    m_negatives: int = Field(100, ge=1)  # M sampled intra-domain negatives
    # fedcsr only: probability of dropping each item when making a sequence's augmented view
    augment_drop: float = Field(0.2, ge=0, lt=1)


class TrainConfig(_Section):
    lr: float = Field(1e-3, gt=0)  # paper grid {1e-4, 5e-4, 1e-3}
    weight_decay: float = Field(1e-5, ge=0)  # L2, paper grid {1e-5, 5e-5, 1e-4, 5e-4}
    # "adam": Adam with L2 in the gradient, as the paper describes. Adam normalises that term
    # like any gradient, so every item row a client does not touch shrinks by about lr per
    # step; on sparse data this acts as a popularity prior, and on Food-Kitchen it learned far
    # faster than "adamw" (decoupled decay) in our first runs (BENCHMARKS.md). Kept as the
    # paper-literal default until item biases / initialisation are studied.
    optimizer: Literal["adam", "adamw"] = "adam"
    # "cosine": lr decays from lr to lr * lr_min_ratio over the rounds (or standalone passes).
    # Offered for tuning; on Food-Kitchen a 60-round cosine learned slower than constant
    # (BENCHMARKS.md).
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_min_ratio: float = Field(0.1, ge=0, le=1)
    batch_size: int = Field(256, ge=1)  # paper: 256
    # Cut each client's batches from its users sorted by sequence length (batch order still
    # shuffled), so batches carry little padding; each domain's prediction loss is reweighted
    # by the batch's share of that domain's targets, so every target weighs what it does in
    # random batches. For long-tailed data (the titled Food-Kitchen); off: the paper's random
    # batches.
    length_buckets: bool = False
    local_epochs: int = Field(1, ge=1)  # paper: E = 1
    threads: int = Field(0, ge=0)  # torch threads per client process (0: torch default)


class FederationConfig(_Section):
    regime: Literal["federated", "local", "centralised"] = "federated"
    rounds: int = Field(200, ge=1)  # paper: T = 200
    fraction: float = Field(0.2, gt=0, le=1)  # paper: C = 0.2
    engine: Literal["simulation", "deployment"] = "simulation"
    # Simulation engine: how many sampled clients train at once, one Ray worker each (with
    # train.threads torch threads each). Replies are aggregated in client order, so this
    # changes how fast a round goes, never its result (tested); memory grows with it (about
    # 2 GB a worker on the titled Food-Kitchen). 2 suits a 2-core machine.
    parallel_clients: int = Field(2, ge=1)
    # Which parameters travel. "no-item-table": the item embedding table stays at its seeded
    # initial value on every party (public, never trained, never sent); only encoders and
    # fusion layers are federated. Cuts each message to a few percent and keeps the DP noise
    # vector small (BENCHMARKS.md measures what it costs in accuracy).
    shared_parameters: Literal["all", "no-item-table"] = "all"
    # Flower's SecAgg+: the server only learns the sum of the sampled clients' updates.
    secure_aggregation: bool = False
    # SecAgg+ clips each size-weighted entry to +-range before quantising. None: 8 without
    # DP; with DP, clip_max * (1 + 8 * largest noise multiplier), so noise is (almost surely,
    # 8 sigma) carried intact.
    secagg_clipping_range: float | None = Field(None, gt=0)
    # Cross-client inter-domain contrast: where a user's domains live on different clients
    # (partition.scheme=by-domain), the clients find their shared users by PSI when the run is
    # prepared, and each sampled client sends the representations of those users (keyed by
    # their position in the pair's intersection, never by identifier) for its partners'
    # inter-domain term (fedscope.federation.exchange; docs/threat-model.md says who learns
    # what). Off: the paper's fallback, the term covers only users a client holds in several
    # domains itself.
    exchange_representations: bool = False
    # Std of Gaussian noise added to each unit-norm representation before it leaves a client.
    # Not part of the DP accountant's guarantee (that covers model updates only).
    exchange_noise: float = Field(0.0, ge=0)
    # What a federated round does when its clients' local steps produce non-finite weights
    # (or the global model's validation scores are non-finite). "fail": the run fails.
    # "stop": training ends there, and the run is evaluated at its best validated round and
    # marked as stopped in results.json: how a privacy-utility sweep records a budget whose
    # noise destroys the model instead of losing the point.
    on_divergence: Literal["fail", "stop"] = "fail"


class EvalConfig(_Section):
    n_negatives: int = Field(999, ge=1)  # paper: 999 sampled negatives
    candidate_seed: int = 0
    every: int = Field(1, ge=1)  # validate every this many rounds
    valid_subset: int | None = Field(3000, ge=1)  # fixed subset for per-round validation; None: all
    selection_metric: Literal["MRR", "HR@10", "NDCG@10"] = "MRR"  # paper: best validation MRR
    patience: int | None = Field(None, ge=1)  # stop after this many validations without gain


class PrivacyConfig(_Section):
    """Adaptive personalised differential privacy (the paper's "Privacy protection").

    Off while ``epsilon`` is None. Uniform DP, the paper's baseline, is ``beta=0`` with
    ``clip_gamma=None`` (fixed clipping) in the same code path.
    """

    epsilon: float | None = Field(None, gt=0)  # eps_total, split over clients (see allocation)
    delta: float = Field(1e-5, gt=0, lt=1)  # delta_total; delta_k = delta_total / K
    beta: float = Field(0.5, ge=0, le=1)  # eps_k proportional to |U_k|^beta
    # "split": eps_k = eps_total * |U_k|^b / sum_j |U_j|^b, as in the paper (the clients'
    # budgets sum to eps_total). "mean": the same shares scaled by K, so the mean client
    # budget is eps_total (each client's own guarantee is eps_k either way).
    allocation: Literal["split", "mean"] = "split"
    clip_initial: float = Field(1.0, gt=0)  # C_k before the client has any update norm
    clip_gamma: float | None = Field(1.0, gt=0)  # C_k = gamma * median(last M norms); None: fixed
    clip_window: int = Field(5, ge=1)  # M
    # Upper bound on C_k: bounds what the data-dependent adaptive threshold can become, and
    # with it the range SecAgg+ must carry (federation.secagg_clipping_range).
    clip_max: float = Field(10.0, gt=0)
    # "accountant": one noise multiplier per client, solved so that the accountant's epsilon
    # after T rounds equals eps_k (the budget typed is the budget reported). "per-round": the
    # paper's sigma_k = sqrt(2 ln(1.25/delta_k)) C_k / eps_k, which bounds one round only; the
    # accountant then stops clients when they reach eps_k (see on_exhausted).
    calibration: Literal["accountant", "per-round"] = "accountant"
    on_exhausted: Literal["suspend", "raise-noise"] = "suspend"
    accountant: Literal["rdp", "opacus-rdp"] = "rdp"
    # Amplification by subsampling (q = C) assumes the adversary does not learn which clients
    # were sampled; False accounts every round at q = 1 (the conservative choice).
    amplification: bool = True
    max_noise_multiplier: float = Field(1e4, gt=0)  # budgets needing more are refused
    # Noise from the OS's entropy instead of the run seed: real deployments; breaks
    # bit-identical resume, so off by default in research runs.
    secure_noise: bool = False

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None

    @model_validator(mode="after")
    def _initial_clip_within_max(self) -> PrivacyConfig:
        if self.clip_initial > self.clip_max:
            raise ValueError(
                f"privacy.clip_initial ({self.clip_initial:g}) exceeds privacy.clip_max "
                f"({self.clip_max:g})"
            )
        return self


class SemanticsConfig(_Section):
    """Semantic features f_A from `fedscope augment` (the paper's IAE and UFE)."""

    store: str | None = None  # a store folder written by `fedscope augment`; None: no semantics
    items: bool = True  # IAE: item features into the item fusion encoder
    users: bool = True  # UFE: user profile features into the user fusion encoder


# Settings that decide how fast a run goes and never what it computes (each is tested to leave
# results bit-identical): a stored run matches a plan that differs only in these.
SPEED_ONLY_SETTINGS: tuple[str, ...] = ("federation.parallel_clients",)


class ExperimentConfig(_Section):
    method: str = "fedscope"
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    semantics: SemanticsConfig = Field(default_factory=SemanticsConfig)

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> ExperimentConfig:
        if self.model.dim % self.model.n_heads:
            raise ValueError(
                f"model.dim ({self.model.dim}) must be divisible by model.n_heads ({self.model.n_heads})"
            )
        return self

    @model_validator(mode="after")
    def _privacy_needs_federation(self) -> ExperimentConfig:
        if self.privacy.enabled and self.federation.regime != "federated":
            raise ValueError(
                f"privacy.epsilon is set but federation.regime is {self.federation.regime!r}: "
                "differential privacy protects the updates clients send, so it needs "
                "federation.regime=federated"
            )
        return self

    @model_validator(mode="after")
    def _exchange_needs_split_users(self) -> ExperimentConfig:
        f = self.federation
        if not f.exchange_representations:
            return self
        problems = []
        if f.regime != "federated":
            problems.append(f"federation.regime is {f.regime!r}, not 'federated'")
        if self.partition.scheme != "by-domain":
            problems.append(
                f"partition.scheme is {self.partition.scheme!r}: only 'by-domain' splits a "
                "user's domains across clients (other schemes give every user one client)"
            )
        if f.secure_aggregation:
            problems.append(
                "federation.secure_aggregation is on: representations would ride outside "
                "SecAgg+'s masked vector, which this release does not support"
            )
        if self.loss.alpha * self.loss.lambda_inter == 0:
            problems.append("loss.alpha * loss.lambda_inter is 0: the inter-domain term is off")
        if problems:
            raise ValueError("federation.exchange_representations needs: " + "; ".join(problems))
        return self


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message says why."""


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {k!r} is a value, not a section")
    node[keys[-1]] = value


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Defaults, then the file (TOML or JSON), then ``key.sub=value`` overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: configuration file not found")
        text = path.read_text()
        try:
            tree = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(
                f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}"
            ) from exc
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=0.001")
        key, value = item.split("=", 1)
        _set_path(tree, key.strip(), _parse_value(value.strip()))
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "config"
            lines.append(f"{where}: {err['msg']}")
        source = f"{path}: " if path is not None else ""
        raise ConfigError(source + "invalid configuration:\n  " + "\n  ".join(lines)) from exc
