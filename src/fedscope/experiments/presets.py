"""Named sets of config overrides (on top of the paper's defaults in :mod:`fedscope.config`).

A preset is just a list of ``key=value`` overrides, so ``fedscope train --set`` can reproduce
any of them by hand.
"""

from __future__ import annotations

# `fedscope demo`: the embedded generated data set, federated, small enough for a 2-core
# machine in a few minutes. With the paper's K=50, batch 256 and E=1 a client of this data
# set would take a single optimiser step per round; 10 clients, batches of 64, two local
# epochs and a higher learning rate give every sampled client about a dozen steps a round.
DEMO: tuple[str, ...] = (
    "data.name=synthetic",
    "partition.n_clients=10",
    "federation.fraction=0.3",
    "federation.rounds=25",
    "train.batch_size=64",
    "train.local_epochs=2",
    "train.lr=0.005",
    "eval.every=5",
    "eval.valid_subset=1500",
)

DEMO_METHODS: tuple[str, ...] = ("fedscope", "sasrec")

PRESETS: dict[str, tuple[str, ...]] = {"demo": DEMO}
