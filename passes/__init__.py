"""graphopt's pass library. One pass per file; the registry below is the explicit list."""

from __future__ import annotations

from graphopt.passes.convert_precision import Bf16, Fp16
from graphopt.passes.correct_bias import CorrectBias
from graphopt.passes.cse import CommonSubexpressionElimination
from graphopt.passes.dead_code_elimination import DeadCodeElimination
from graphopt.passes.drop_default_inputs import DropDefaultInputs
from graphopt.passes.eliminate_identity import EliminateIdentity
from graphopt.passes.eliminate_noops import EliminateNoops
from graphopt.passes.equalize_cross_layer import EqualizeCrossLayer
from graphopt.passes.fold_constants import FoldConstants
from graphopt.passes.fold_if import FoldIf
from graphopt.passes.fold_shape_chains import FoldShapeChains
from graphopt.passes.fold_shape_values import FoldShapeValues
from graphopt.passes.fuse_batchnorm import FuseBatchNorm
from graphopt.passes.fuse_channel_affine import FuseChannelAffine
from graphopt.passes.fuse_input_scale import FuseInputScale
from graphopt.passes.fuse_matmul_add import FuseMatMulAdd
from graphopt.passes.fuse_pad_conv import FusePadConv
from graphopt.passes.merge_concats import MergeConcats
from graphopt.passes.merge_reshapes import MergeReshapes
from graphopt.passes.merge_transposes import MergeTransposes
from graphopt.passes.promote_shape_inputs import PromoteShapeInputs
from graphopt.passes.prune_channels import PruneChannels
from graphopt.passes.prune_weights import PruneWeights
from graphopt.passes.quantize_int8 import QuantizeInt8
from graphopt.passes.raise_opset import RaiseOpset
from graphopt.passes.smooth_quant import SmoothQuant

from graphopt.pipeline.registry import PLUGIN_GROUP, Alias, Registry
from graphopt.rewrite import Rule, RulePass

PASSES = [
    DeadCodeElimination,
    EliminateIdentity,
    EliminateNoops,
    DropDefaultInputs,
    CommonSubexpressionElimination,
    FoldConstants,
    FoldShapeChains,
    FoldShapeValues,
    FoldIf,
    MergeReshapes,
    MergeTransposes,
    MergeConcats,
    FuseBatchNorm,
    FuseChannelAffine,
    FuseInputScale,
    FusePadConv,
    FuseMatMulAdd,
    PromoteShapeInputs,
    RaiseOpset,
    EqualizeCrossLayer,
    SmoothQuant,
    CorrectBias,
    QuantizeInt8,
    PruneWeights,
    PruneChannels,
    Fp16,
    Bf16,
]

ALIASES = [
    Alias("cleanup", "remove Identity nodes and dead code, to a fixed point",
          ("eliminate-identity", "dce"), fixed_point=True),
    Alias("fold", "constant folding, shape-chain folding, Ifs with a known condition inlined, no-op/Identity "
          "removal, optional inputs equal to their defaults dropped, reshape, transpose and concat merging, CSE "
          "and dead code, to a fixed point",
          ("fold-constants", "fold-shape-values", "fold-if", "fold-shape-chains", "eliminate-noops",
           "drop-default-inputs", "eliminate-identity", "merge-reshapes", "merge-transposes", "merge-concats", "cse",
           "dce"),
          fixed_point=True),
    Alias("fuse", "BatchNorm, per-channel scale (after and before a layer), Pad and MatMul+Add fusions, to a fixed point",
          ("fuse-batchnorm", "fuse-channel-affine", "fuse-input-scale", "fuse-pad-conv", "fuse-matmul-add", "eliminate-identity",
           "dce"), fixed_point=True),
    Alias("promote", "TensorRT prep: every build-time input (shapes, axes, pads, ...) a constant where it can "
          "be, dynamic dims kept as 0/-1, to a fixed point",
          ("fold-constants", "fold-shape-values", "fold-shape-chains", "promote-shape-inputs", "eliminate-noops", "eliminate-identity",
           "cse", "dce"), fixed_point=True),
    Alias("int8", "TensorRT explicit INT8: raise the opset to 13, fold BatchNorm and constants, then insert "
          "calibrated Q/DQ (per-channel weights, per-tensor activations)",
          ("raise-opset", "fuse", "fold", "quantize-int8", "dce")),
    Alias("prune", "pruning (method=magnitude|2:4|channel): constants fold, channels go (BatchNorm gamma ranks "
          "them), BatchNorm folds, then weights are zeroed by their folded magnitudes",
          ("fold", "prune-channels", "fuse", "fold", "prune-weights", "dce"),
          # prune-channels alone removes channels; in `prune` it acts only for method=channel
          member_options=(("prune-channels", "method", "magnitude"),)),
]


def rule_as_pass(item):
    """A Rule (instance or subclass) from a plugin as a pass named after it; anything else as is."""
    if isinstance(item, type) and issubclass(item, Rule):
        item = item()
    return RulePass.of(item) if isinstance(item, Rule) else item


def default_registry() -> Registry:
    """The built-in passes and aliases; other packages' passes and rules join through entry points."""
    return Registry(PASSES, ALIASES, plugin_group=PLUGIN_GROUP, plugin_adapter=rule_as_pass)
