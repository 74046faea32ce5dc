"""Yggdrasil: a federated ERP. See ARCHITECTURE.md in the shared folder for the system map."""

__version__ = "0.1.0"
