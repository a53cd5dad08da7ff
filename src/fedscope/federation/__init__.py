"""Federated training on Flower 1.41: one ServerApp/ClientApp pair for simulation and deployment.

Modules:

- :mod:`~fedscope.federation.task`: the ``FederatedTask`` protocol the apps program against.
- :mod:`~fedscope.federation.run_dir`: the run-directory layout (task spec, metrics,
  events, atomic checkpoints) shared by every process of a run.
- :mod:`~fedscope.federation.strategy`: seeded client sampling and the size-weighted
  delta step ``w <- w + sum |U_k| Delta_k / sum |U_k|`` (works with and without SecAgg+).
- :mod:`~fedscope.federation.client_mods`: the client update path as Flower mods
  (train -> privatise -> size-weight encode -> SecAgg+).
- :mod:`~fedscope.federation.client_app` / :mod:`~fedscope.federation.server_app`:
  ``build_*_app(overrides)`` plus module-level ``app`` objects for ``flwr run``.
- :mod:`~fedscope.federation.simulation`: ``run_simulation(run_dir, num_supernodes)`` on
  Flower's simulation engine (Ray, 127.0.0.1 only).

Flower is imported only by those modules, not by this package's ``__init__``.
"""

import warnings

# flwr 1.41's generated protobuf modules (gencode 5.29) warn once per module under the
# protobuf 6.30 runtime that openmined-psi pins; harmless, and a dozen lines per import.
warnings.filterwarnings(
    "ignore",
    message=r"Protobuf gencode version 5\.\d+\.\d+ is exactly one major version older",
    category=UserWarning,
)

from fedscope.federation.task import ClientUpdate  # noqa: E402, FederatedTask, FederationSettings, load_task

__all__ = ["ClientUpdate", "FederatedTask", "FederationSettings", "load_task"]
