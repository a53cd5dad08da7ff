"""A run's privacy plan: every client's budget and noise schedule, fixed before training.

Everything here is a function of public quantities (the configuration, |U_k|, K, C, T and
the seeded client sampling), so it is computed once when a run is prepared, written to the
run directory (``privacy_plan.json``) and read by every party. Training then never solves
for noise, and the report can tell in advance what each client will spend.

Accounting unit. With ``amplification`` (the default), every server round is one step of the
Poisson-subsampled Gaussian mechanism at q = C for every client, sampled or not; without it, a
step is one round in which the client actually sends (q = 1). Because the sampling is a seeded
function of (seed, round), the number of rounds each client will send in is known here.

Per client, a plan holds noise multipliers by step (``segments``) and ``max_steps``, the
number of steps that fit in its budget. A client asked to train at a later step is suspended:
it sends a zero update with zero weight, so it spends nothing more.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fedscope.config import ExperimentConfig, PrivacyConfig
from fedscope.privacy.accountant import make_accountant
from fedscope.privacy.budget import ClientBudget, PrivacySettingsError, allocate_budgets
from fedscope.privacy.calibration import noise_multiplier_for_budget, paper_noise_multiplier

PLAN_FILE = "privacy_plan.json"


@dataclass(frozen=True)
class Segment:
    """Steps ``first..last`` (1-based, inclusive) use noise multiplier ``z``."""

    first: int
    last: int
    z: float


@dataclass(frozen=True)
class ClientPlan:
    client_id: int
    n_users: int
    epsilon: float  # eps_k
    delta: float  # delta_k
    steps_planned: int  # steps the run would charge without any limit (T, or rounds sent)
    max_steps: int  # steps within budget; steps after it are suspended
    segments: tuple[Segment, ...]
    noise_raised_at: int | None = None  # first step of a raised-noise segment, if any

    def noise_multiplier(self, step: int) -> float | None:
        """z for ``step``, or None when the client is suspended at that step."""
        if step > self.max_steps:
            return None
        for seg in self.segments:
            if seg.first <= step <= seg.last:
                return seg.z
        raise ValueError(f"client {self.client_id}: no noise multiplier planned for step {step}")

    def history(self, steps: int, sample_rate: float) -> list[tuple[float, float, int]]:
        """Accountant events of the first ``steps`` steps (capped at ``max_steps``)."""
        steps = min(steps, self.max_steps)
        events = []
        for seg in self.segments:
            n = min(seg.last, steps) - seg.first + 1
            if n > 0:
                events.append((seg.z, sample_rate, n))
        return events


@dataclass(frozen=True)
class PrivacyPlan:
    settings: PrivacyConfig
    sample_rate: float  # q per step: C with amplification, 1 without
    rounds: int
    clients: tuple[ClientPlan, ...]

    def step(self, server_round: int, sent_before: int) -> int:
        """The accounting step of ``server_round`` for a client that has sent ``sent_before``
        updates in earlier rounds (see the module docstring)."""
        return server_round if self.settings.amplification else sent_before + 1

    def epsilon_spent(self, client_id: int, steps: int) -> float:
        """The accountant's epsilon of client ``client_id`` after ``steps`` charged steps."""
        plan = self.clients[client_id]
        return _epsilon(
            tuple(plan.history(steps, self.sample_rate)), plan.delta, self.settings.accountant
        )

    @property
    def largest_noise_multiplier(self) -> float:
        return max(seg.z for c in self.clients for seg in c.segments)

    def secagg_clipping_range(self) -> float:
        """A SecAgg+ range that carries every privatised entry: |entry| <= C + 8 sigma."""
        return self.settings.clip_max * (1.0 + 8.0 * self.largest_noise_multiplier)

    def to_json(self) -> str:
        return json.dumps(
            {
                "settings": self.settings.model_dump(),
                "sample_rate": self.sample_rate,
                "rounds": self.rounds,
                "clients": [asdict(c) for c in self.clients],
            },
            indent=1,
        )

    @staticmethod
    def from_json(text: str) -> PrivacyPlan:
        raw = json.loads(text)
        clients = tuple(
            ClientPlan(
                **{k: v for k, v in c.items() if k != "segments"},
                segments=tuple(Segment(**s) for s in c["segments"]),
            )
            for c in raw["clients"]
        )
        return PrivacyPlan(
            PrivacyConfig.model_validate(raw["settings"]),
            float(raw["sample_rate"]),
            int(raw["rounds"]),
            clients,
        )


def plan_path(run_dir: Path) -> Path:
    return Path(run_dir) / PLAN_FILE


def load_plan(run_dir: Path) -> PrivacyPlan:
    return PrivacyPlan.from_json(plan_path(run_dir).read_text())


def allocate(settings: PrivacyConfig, n_users: list[int]) -> list[ClientBudget]:
    """Per-client budgets under ``settings.allocation`` (see PrivacyConfig)."""
    assert settings.epsilon is not None
    budgets = allocate_budgets(n_users, settings.epsilon, settings.delta, settings.beta)
    if settings.allocation == "mean":
        k = len(budgets)
        budgets = [ClientBudget(b.client_id, b.n_users, b.epsilon * k, b.delta) for b in budgets]
    return budgets


def make_plan(
    config: ExperimentConfig, n_users: list[int], sends_per_client: list[int]
) -> PrivacyPlan:
    """The plan for a run; PrivacySettingsError when a client's budget cannot be met.

    ``sends_per_client[k]``: the rounds client k will be sampled in over the whole run.
    """
    settings = config.privacy
    if not settings.enabled:
        raise ValueError("privacy is off (privacy.epsilon is not set)")
    rounds = config.federation.rounds
    q = config.federation.fraction if settings.amplification else 1.0
    clients = []
    for budget in allocate(settings, n_users):
        planned = rounds if settings.amplification else sends_per_client[budget.client_id]
        clients.append(_client_plan(settings, budget, q, max(planned, 1)))
    return PrivacyPlan(settings, q, rounds, tuple(clients))


def _client_plan(
    settings: PrivacyConfig, budget: ClientBudget, q: float, planned: int
) -> ClientPlan:
    kind = settings.accountant

    def plan(max_steps: int, segments: list[Segment], raised: int | None = None) -> ClientPlan:
        return ClientPlan(
            budget.client_id,
            budget.n_users,
            budget.epsilon,
            budget.delta,
            planned,
            max_steps,
            tuple(segments),
            noise_raised_at=raised,
        )

    if settings.calibration == "accountant":
        try:
            z = noise_multiplier_for_budget(
                budget.epsilon,
                budget.delta,
                q,
                planned,
                kind,
                max_noise_multiplier=settings.max_noise_multiplier,
            )
        except PrivacySettingsError as exc:
            raise PrivacySettingsError(
                f"client {budget.client_id} (|U_k|={budget.n_users}, eps_k={budget.epsilon:.4g}, "
                f"delta_k={budget.delta:.3g}): {exc}"
            ) from exc
        return plan(planned, [Segment(1, planned, z)])
    # The paper's per-round calibration: a fixed z until the accountant reaches eps_k.
    z = paper_noise_multiplier(budget.epsilon, budget.delta)
    fit = _steps_within_budget(z, q, planned, budget, kind)
    if fit >= planned or settings.on_exhausted == "suspend":
        return plan(fit, [Segment(1, planned, z)])
    # raise-noise: keep z while the remaining steps can still be covered by more noise. The
    # switch happens at the first step s where the prefix (s - 1 steps at z) leaves room: we
    # take the largest prefix whose epsilon is at most half the budget, then solve the rest.
    prefix = _steps_within_budget(z, q, fit, _half(budget), kind)
    prefix_events = [(z, q, prefix)] if prefix else []
    z_rest = _solve_suffix(prefix_events, q, planned - prefix, budget, kind, settings)
    segments = [Segment(1, prefix, z)] if prefix else []
    segments.append(Segment(prefix + 1, planned, z_rest))
    return plan(planned, segments, raised=prefix + 1)


def _half(budget: ClientBudget) -> ClientBudget:
    return ClientBudget(budget.client_id, budget.n_users, budget.epsilon / 2, budget.delta)


def _steps_within_budget(z: float, q: float, planned: int, budget: ClientBudget, kind: str) -> int:
    """The largest n <= planned with epsilon(n steps at z) <= eps_k (bisection on n)."""
    if _epsilon(((z, q, planned),), budget.delta, kind) <= budget.epsilon:
        return planned
    lo, hi = 0, planned  # epsilon(lo) fits, epsilon(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _epsilon(((z, q, mid),), budget.delta, kind) <= budget.epsilon:
            lo = mid
        else:
            hi = mid
    return lo


def _solve_suffix(
    prefix: list[tuple[float, float, int]],
    q: float,
    steps: int,
    budget: ClientBudget,
    kind: str,
    settings: PrivacyConfig,
) -> float:
    """The smallest z for ``steps`` more steps so that prefix + suffix fits eps_k (bisection
    on log z; the accountant has no closed form for a composed history)."""
    lo, hi = 1e-2, settings.max_noise_multiplier

    def fits(z: float) -> bool:
        return _epsilon((*prefix, (z, q, steps)), budget.delta, kind) <= budget.epsilon

    if not fits(hi):
        raise PrivacySettingsError(
            f"client {budget.client_id}: even noise multiplier {hi:g} cannot keep the remaining "
            f"{steps} steps within eps_k={budget.epsilon:.4g}"
        )
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if fits(mid):
            hi = mid
        else:
            lo = mid
        if hi / lo < 1.001:
            break
    return hi


_EPS_CACHE: dict[tuple, float] = {}


def _epsilon(events: tuple[tuple[float, float, int], ...], delta: float, kind: str) -> float:
    key = (events, delta, kind)
    if key not in _EPS_CACHE:
        accountant = make_accountant(kind, [e for e in events if e[2] > 0])
        _EPS_CACHE[key] = accountant.epsilon(delta)
    return _EPS_CACHE[key]


def sends_per_client(seed: int, rounds: int, n_clients: int, fraction: float) -> list[int]:
    """How many rounds each client is sampled in (the server's seeded sampling)."""
    from fedscope.federation.strategy import sample_partitions

    counts = np.zeros(n_clients, dtype=np.int64)
    ids = list(range(n_clients))
    for t in range(1, rounds + 1):
        counts[sample_partitions(seed, t, ids, fraction)] += 1
    return [int(c) for c in counts]
