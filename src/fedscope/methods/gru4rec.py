"""GRU4Rec baseline: one GRU per domain over that domain's sequence only, BCE with sampled
negatives; federated with FedAvg it is "FedAvg+GRU4Rec"."""

from fedscope.methods.base import register
from fedscope.methods.sequential import SequentialMethod


@register
class GRU4Rec(SequentialMethod):
    name = "gru4rec"
    description = "GRU4Rec per domain (GRU, BCE; no cross-domain sequence, fusion or IIDCL)"
    encoder = "gru"
    cross_domain = False
    fusion = False
    contrastive = False
