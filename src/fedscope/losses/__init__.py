"""Training objectives: next-item BCE (L_pred) and IIDCL (L_intra, L_inter), pure torch."""

from fedscope.losses.iidcl import (
    DecoupledWeights,
    IntraPairs,
    JointLoss,
    decoupled_contrastive_terms,
    inter_domain_loss,
    intra_domain_k,
    intra_domain_loss,
    joint_objective,
    select_intra_pairs,
)
from fedscope.losses.prediction import next_item_bce, next_item_targets, sample_negatives

__all__ = [
    "DecoupledWeights",
    "IntraPairs",
    "JointLoss",
    "decoupled_contrastive_terms",
    "inter_domain_loss",
    "intra_domain_k",
    "intra_domain_loss",
    "joint_objective",
    "next_item_bce",
    "next_item_targets",
    "sample_negatives",
    "select_intra_pairs",
]
