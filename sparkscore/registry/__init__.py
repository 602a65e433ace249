"""Named, versioned, aliased models on a local or shared filesystem (DESIGN section 8)."""

from sparkscore.registry.refs import ModelRef, parse_ref, validate_name
from sparkscore.registry.store import (AliasHistory, AliasMove, Damage, Deleted, ModelStatus, ModelVersion, Registry,
                                       default_root)
from sparkscore.registry.routed import RoutedModel

__all__ = ["AliasHistory", "AliasMove", "Damage", "Deleted", "ModelRef", "ModelStatus", "ModelVersion", "Registry",
           "RoutedModel", "default_root", "parse_ref", "validate_name"]
