"""Deploying a run across processes or machines with Flower's deployment engine.

* :mod:`~fedscope.deployment.bundle`: one directory per client holding only its own data;
* :mod:`~fedscope.deployment.node_task`: the task a SuperNode builds from its bundle;
* :mod:`~fedscope.deployment.certs`: a CA and a SuperLink certificate for TLS;
* :mod:`~fedscope.deployment.local`: ``fedscope deploy local``, a SuperLink and N
  SuperNodes on 127.0.0.1, with fault injection for tests and benchmarks.

See docs/deployment.md.
"""
