"""Privacy accountants for the Poisson-subsampled Gaussian mechanism, over maintained libraries.

One round of FedSCOPE's client-level DP is a Gaussian mechanism with noise multiplier
z = sigma / C applied with probability q (the client's sampling rate). An :class:`Accountant`
composes such rounds, possibly with different (z, q) per round, and converts the total Renyi-DP
curve to an (epsilon, delta) guarantee. The RDP maths is the libraries'; this module only
adapts their interfaces:

* ``"rdp"`` (default): Google's dp-accounting ``RdpAccountant``; composes incrementally, so a
  query costs a few milliseconds however long the history is.
* ``"opacus-rdp"``: Opacus's ``RDPAccountant``; recomputes the RDP of every history entry on
  each query (consecutive identical rounds are merged into one entry, so a client with a fixed
  z and q has a one-entry history).

Both use the same RDP orders (:data:`RDP_ORDERS`, Opacus capped at :data:`OPACUS_MAX_ORDER`)
so that their answers differ only by the libraries' numerics.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import ClassVar

from fedscope.privacy.budget import PrivacySettingsError, check_delta

# Renyi orders alpha at which RDP is tracked; epsilon(delta) is the best conversion over them.
# Fine steps below 11 and every integer to 63 cover the large-epsilon regime (optimal orders
# 2-30); above that, integer orders spaced by sqrt(2) up to 8192, which costs at most ~6% over
# the best order in between. The high orders are what small budgets need: the conversion adds
# ln(1/delta) / (alpha - 1), so the smallest epsilon representable is about
# ln(1/delta) / 8191 (0.0019 at delta = 2e-7), whereas dp-accounting's default list (up to
# 1024) could not go below 0.015 there, short of the per-client budgets that splitting
# epsilon_total over 50 clients gives. Each dp-accounting evaluation costs O(sum of integer
# orders) in Python, about 0.1 s for this list.
RDP_ORDERS: tuple[float, ...] = (
    tuple(1 + x / 10.0 for x in range(1, 100))
    + tuple(float(a) for a in range(11, 64))
    + tuple(float(round(64 * 2 ** (k / 2))) for k in range(1, 15))
)

# Opacus computes binomial coefficients as floats; C(alpha, alpha/2) overflows above ~1030.
OPACUS_MAX_ORDER = 1024.0

# dp-accounting's fractional-order series does not converge for small noise multipliers at
# some low orders; it then drops those orders (correctly: the minimum over the rest is still a
# valid bound) and logs one warning per order per query. Those are silenced while composing.
_FRAC_ORDER_WARNING = "_compute_log_a_frac failed to converge"

Event = tuple[float, float, int]


class Accountant(ABC):
    """Composes rounds of the Poisson-subsampled Gaussian mechanism; answers epsilon(delta).

    ``history`` lists ``(noise_multiplier, sample_rate, steps)`` in the order recorded, with
    consecutive records of the same (noise_multiplier, sample_rate) merged.
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self._history: list[Event] = []
        self._epsilon_cache: dict[float, tuple[float, float]] = {}

    @classmethod
    def from_history(cls, history: Iterable[tuple[float, float, int]]) -> Accountant:
        """A new accountant with ``history`` (e.g. restored from a client's saved state)."""
        accountant = cls()
        for noise_multiplier, sample_rate, steps in history:
            accountant.record(noise_multiplier, sample_rate, steps)
        return accountant

    def record(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Compose ``steps`` rounds with noise multiplier z = sigma / C and sampling rate q."""
        event = _check_event(noise_multiplier, sample_rate, steps)
        self._compose(*event)
        z, q, n = event
        if self._history and self._history[-1][:2] == (z, q):
            self._history[-1] = (z, q, self._history[-1][2] + n)
        else:
            self._history.append(event)
        self._epsilon_cache.clear()

    def epsilon(self, delta: float) -> float:
        """Epsilon of everything recorded so far at ``delta`` (0.0 when nothing is recorded)."""
        return self._epsilon_and_order_cached(delta)[0]

    def optimal_order(self, delta: float) -> float | None:
        """The Renyi order that gave ``epsilon(delta)`` (None when nothing is recorded).

        When it is the largest order tracked, the true epsilon may be somewhat smaller than
        the one reported (which remains a valid upper bound).
        """
        if not self._history:
            return None
        return self._epsilon_and_order_cached(delta)[1]

    @property
    def steps(self) -> int:
        """Total number of rounds recorded."""
        return sum(n for _, _, n in self._history)

    @property
    def history(self) -> list[Event]:
        return list(self._history)

    def copy(self) -> Accountant:
        """An independent accountant with the same history (for what-if queries)."""
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps}, history={self._history!r})"

    def _epsilon_and_order_cached(self, delta: float) -> tuple[float, float]:
        target_delta = check_delta(delta)
        if not self._history:
            return 0.0, math.nan
        if target_delta not in self._epsilon_cache:
            eps, order = self._epsilon_and_order(target_delta)
            self._epsilon_cache[target_delta] = (max(0.0, float(eps)), float(order))
        return self._epsilon_cache[target_delta]

    @abstractmethod
    def _compose(self, noise_multiplier: float, sample_rate: float, steps: int) -> None: ...

    @abstractmethod
    def _epsilon_and_order(self, delta: float) -> tuple[float, float]: ...


class RdpAccountant(Accountant):
    """Renyi-DP accounting by dp-accounting (``dp_accounting.rdp.RdpAccountant``)."""

    name = "rdp"

    def __init__(self, orders: Iterable[float] = RDP_ORDERS) -> None:
        from dp_accounting.rdp import RdpAccountant as _DpRdpAccountant

        super().__init__()
        self.orders = tuple(float(a) for a in orders)
        self._accountant = _DpRdpAccountant(orders=list(self.orders))

    def _compose(self, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        import dp_accounting as dp

        round_event = dp.PoissonSampledDpEvent(sample_rate, dp.GaussianDpEvent(noise_multiplier))
        with _quiet_fractional_order_warnings():
            self._accountant.compose(dp.SelfComposedDpEvent(round_event, steps))

    def _epsilon_and_order(self, delta: float) -> tuple[float, float]:
        eps, order = self._accountant.get_epsilon_and_optimal_order(delta)
        return float(eps), float(order)


class OpacusRdpAccountant(Accountant):
    """Renyi-DP accounting by Opacus (``opacus.accountants.RDPAccountant``).

    Records go straight into the Opacus accountant's ``history`` of (z, q, steps) entries,
    which it composes by summing each entry's RDP (``compute_rdp(q, z, steps, orders)``) at
    query time; ``get_privacy_spent(delta=..., alphas=...)`` then converts to epsilon.
    """

    name = "opacus-rdp"

    def __init__(self, orders: Iterable[float] = RDP_ORDERS) -> None:
        from opacus.accountants import RDPAccountant as _OpacusRDPAccountant

        super().__init__()
        self.orders = tuple(float(a) for a in orders if a <= OPACUS_MAX_ORDER)
        self._accountant = _OpacusRDPAccountant()

    def _compose(self, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        history = self._accountant.history
        if history and tuple(history[-1][:2]) == (noise_multiplier, sample_rate):
            history[-1] = (noise_multiplier, sample_rate, history[-1][2] + steps)
        else:
            history.append((noise_multiplier, sample_rate, steps))

    def _epsilon_and_order(self, delta: float) -> tuple[float, float]:
        eps, order = self._accountant.get_privacy_spent(delta=delta, alphas=list(self.orders))
        return float(eps), float(order)


ACCOUNTANTS: dict[str, type[Accountant]] = {
    RdpAccountant.name: RdpAccountant,
    OpacusRdpAccountant.name: OpacusRdpAccountant,
}
DEFAULT_ACCOUNTANT = RdpAccountant.name


def make_accountant(
    kind: str = DEFAULT_ACCOUNTANT, history: Iterable[tuple[float, float, int]] = ()
) -> Accountant:
    """A new accountant of ``kind`` ("rdp" or "opacus-rdp"), optionally replaying ``history``."""
    try:
        cls = ACCOUNTANTS[kind]
    except KeyError:
        known = ", ".join(repr(k) for k in ACCOUNTANTS)
        raise PrivacySettingsError(f"unknown accountant {kind!r}; choose one of {known}") from None
    return cls.from_history(history)


def _check_event(noise_multiplier: float, sample_rate: float, steps: int) -> Event:
    z = float(noise_multiplier)
    if not (math.isfinite(z) and z > 0):
        raise PrivacySettingsError(
            f"noise multiplier must be positive and finite, got {noise_multiplier!r}"
        )
    q = float(sample_rate)
    if not (0.0 < q <= 1.0):
        raise PrivacySettingsError(f"sample rate must lie in (0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise PrivacySettingsError(f"steps must be a whole number >= 1, got {steps!r}")
    return z, q, int(steps)


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextlib.contextmanager
def _quiet_fractional_order_warnings() -> Iterator[None]:
    absl_logger = logging.getLogger("absl")
    message_filter = _DropMessage(_FRAC_ORDER_WARNING)
    absl_logger.addFilter(message_filter)
    try:
        yield
    finally:
        absl_logger.removeFilter(message_filter)
