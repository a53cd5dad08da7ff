"""Adaptive personalised differential privacy for client updates (FedSCOPE, "Privacy protection").

The maths only, with no training or Flower code: per-client budgets (:mod:`.budget`), L2
clipping with fixed or adaptive thresholds (:mod:`.clipping`), the Gaussian mechanism
(:mod:`.mechanism`), accountants for the Poisson-subsampled Gaussian mechanism over dp-accounting
and Opacus (:mod:`.accountant`), and noise calibration for a budget (:mod:`.calibration`).
"""

from fedscope.privacy.accountant import (
    ACCOUNTANTS,
    DEFAULT_ACCOUNTANT,
    RDP_ORDERS,
    Accountant,
    OpacusRdpAccountant,
    RdpAccountant,
    make_accountant,
)
from fedscope.privacy.budget import ClientBudget, PrivacySettingsError, allocate_budgets
from fedscope.privacy.calibration import (
    epsilon_after,
    noise_multiplier_for_budget,
    noise_multipliers_for_budgets,
    paper_noise_multiplier,
)
from fedscope.privacy.clipping import ClippingRule, clip_update, update_norm
from fedscope.privacy.mechanism import add_gaussian_noise, gaussian_privatise
from fedscope.privacy.psi import (
    AlignmentResult,
    PsiInitiator,
    PsiResponder,
    PsiTranscript,
    align_clients,
    intersect,
)

__all__ = [
    "ACCOUNTANTS",
    "DEFAULT_ACCOUNTANT",
    "RDP_ORDERS",
    "Accountant",
    "AlignmentResult",
    "ClientBudget",
    "ClippingRule",
    "OpacusRdpAccountant",
    "PrivacySettingsError",
    "PsiInitiator",
    "PsiResponder",
    "PsiTranscript",
    "RdpAccountant",
    "add_gaussian_noise",
    "align_clients",
    "allocate_budgets",
    "clip_update",
    "epsilon_after",
    "gaussian_privatise",
    "intersect",
    "make_accountant",
    "noise_multiplier_for_budget",
    "noise_multipliers_for_budgets",
    "paper_noise_multiplier",
    "update_norm",
]
