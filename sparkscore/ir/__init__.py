"""Frozen, numpy-backed model IR every importer produces and every backend consumes."""

from sparkscore.ir.features import INDICATOR, PASSTHROUGH, FeatureMap
from sparkscore.ir.linear import LINKS, LinearModel
from sparkscore.ir.model import Model
from sparkscore.ir.signature import Column, Signature
from sparkscore.ir.trees import (LEAF, MISSING_AS_ZERO, MISSING_NAN, MISSING_ZERO, TreeBuilder,
                                 TreeEnsemble)

__all__ = ["Column", "FeatureMap", "INDICATOR", "LEAF", "LINKS", "LinearModel", "MISSING_AS_ZERO",
           "MISSING_NAN", "MISSING_ZERO", "Model", "PASSTHROUGH", "Signature", "TreeBuilder", "TreeEnsemble"]
