"""SASRec baseline: one Transformer per domain over that domain's sequence only; no
cross-domain sequence, no semantics, no contrastive terms. Federated with FedAvg it is the
paper-style "FedAvg+SASRec" baseline."""

from fedscope.methods.base import register
from fedscope.methods.sequential import SequentialMethod


@register
class SASRec(SequentialMethod):
    name = "sasrec"
    description = "SASRec per domain (Transformer, BCE; no cross-domain sequence, fusion or IIDCL)"
    cross_domain = False
    fusion = False
    contrastive = False
