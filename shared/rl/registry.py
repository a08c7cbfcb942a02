"""The generic registry lives in `shared.registry` (torch-free, so reward and data packages can use it
without importing torch); re-exported here for the policy-gradient registries."""

from shared.registry import Registry, UnknownNameError

__all__ = ["Registry", "UnknownNameError"]
