"""fedscope: privacy-preserving federated cross-domain sequential recommendation."""

__version__ = "0.1.0"
