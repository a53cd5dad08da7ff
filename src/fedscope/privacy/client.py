"""The client's side of differential privacy: clip, add noise, keep a ledger.

:class:`DpPrivatiser` is the ``privatiser`` hook the Flower client mods call with a client's
raw update Delta_k (see :mod:`fedscope.federation.client_mods`). It follows the run's
:class:`~fedscope.privacy.plan.PrivacyPlan`:

1. the step to charge (the round, or the client's count of sends without amplification);
2. suspended past its ``max_steps``: nothing is sent (the mod sends zeros with zero weight);
3. otherwise C_k from the adaptive rule over the client's earlier update norms, clipping,
   and Gaussian noise with sigma = z_k * C_k.

Each client keeps a ledger (one JSON line per round it was asked to train) in
``<run_dir>/privacy/``: its clipping history lives there, so it survives process restarts
and resumed runs; the report is built from the ledgers. In a deployment the ledger is the
client's own file, on its own machine.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from fedscope.privacy.clipping import ClippingRule, clip_update
from fedscope.privacy.mechanism import add_gaussian_noise
from fedscope.privacy.plan import PrivacyPlan

LEDGER_DIR = "privacy"

Weights = list[np.ndarray]


def ledger_path(run_dir: Path, client_id: int) -> Path:
    return Path(run_dir) / LEDGER_DIR / f"client-{client_id:04d}.jsonl"


def read_ledger(run_dir: Path, client_id: int, before_round: int | None = None) -> list[dict]:
    """The client's ledger rows (only those of rounds before ``before_round`` when given)."""
    path = ledger_path(run_dir, client_id)
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {number}: not a JSON object ({exc.msg})") from exc
        if before_round is None or row["round"] < before_round:
            rows.append(row)
    return rows


def _write_ledger(run_dir: Path, client_id: int, rows: list[dict]) -> None:
    # Rewritten whole (atomically): rows of rounds after a resumed run's checkpoint belong to
    # an abandoned future and are dropped by the caller.
    path = ledger_path(run_dir, client_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


class DpPrivatiser:
    """Clipping + Gaussian noise for one run's clients, following its privacy plan."""

    def __init__(self, plan: PrivacyPlan, run_dir: Path, seed: int):
        self.plan = plan
        self.run_dir = Path(run_dir)
        self.seed = seed
        s = plan.settings
        self.rule = ClippingRule(s.clip_initial, s.clip_gamma, s.clip_window)

    def step_of(self, earlier: list[dict], server_round: int) -> int:
        """The accounting step this round is for this client (see the plan's docstring)."""
        return self.plan.step(server_round, sum(1 for r in earlier if r["status"] == "sent"))

    def __call__(
        self, update: Weights, client_id: int, server_round: int, ctx: Any = None
    ) -> Weights | None:
        """The privatised update, or None when the client's budget is spent (suspended)."""
        earlier = read_ledger(self.run_dir, client_id, before_round=server_round)
        plan = self.plan.clients[client_id]
        step = self.step_of(earlier, server_round)
        z = plan.noise_multiplier(step)
        row: dict[str, Any] = {"round": server_round, "step": step}
        if z is None:
            row |= {"status": "suspended"}
            _write_ledger(self.run_dir, client_id, [*earlier, row])
            return None
        norms = [r["norm"] for r in earlier if r["status"] == "sent"]
        threshold = min(self.rule.threshold(norms), self.plan.settings.clip_max)
        clipped, norm = clip_update(update, threshold)
        sigma = z * threshold
        private = add_gaussian_noise(clipped, sigma, self._rng(client_id, server_round))
        row |= {
            "status": "sent",
            "noise_multiplier": z,
            "clip": threshold,
            "norm": norm,
            "clipped": bool(norm > threshold),
            "sigma": sigma,
        }
        _write_ledger(self.run_dir, client_id, [*earlier, row])
        return private

    def _rng(self, client_id: int, server_round: int) -> np.random.Generator:
        if self.plan.settings.secure_noise:
            # A seeded generator is predictable by anyone who knows the seed; a deployment
            # wants the noise unknown to everyone, including whoever reads the config.
            return np.random.default_rng(secrets.randbits(128))
        # Seeded by (run seed, round, client), apart from the training seed's stream, so a
        # resumed run adds the same noise as an uninterrupted one.
        return np.random.default_rng([self.seed, server_round, client_id, 0x5EED_D9])
