"""FedSCOPE (Zhao et al., 2026): per-domain Transformer encoders plus the aggregated
cross-domain sequence, the fusion MLP over behaviour and semantic features, next-item BCE,
and IIDCL. Privacy (adaptive DP, SecAgg+) is applied by the federation around the client step."""

from fedscope.methods.base import register
from fedscope.methods.sequential import SequentialMethod


@register
class FedSCOPE(SequentialMethod):
    name = "fedscope"
    description = (
        "FedSCOPE: Transformer per domain + cross-domain sequence, fusion MLP, BCE + IIDCL"
    )


@register
class FedSCOPENoIIDCL(SequentialMethod):
    name = "fedscope-no-iidcl"
    description = "FedSCOPE without IIDCL (alpha = 0): the contrastive ablation"
    contrastive = False
