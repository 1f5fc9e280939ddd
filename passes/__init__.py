"""graphopt's pass library. One pass per file; the registry below is the explicit list."""

from __future__ import annotations

from graphopt.pipeline.registry import PLUGIN_GROUP, Alias, PassRef, Registry
from graphopt.rewrite import Rule, RulePass

# Every built-in pass, by name and class: a run imports the modules of the passes it names only
# (docs/ARCHITECTURE.md, Passes and the pass manager). `PASSES` is the list of classes.
LIBRARY = [PassRef(name, f"graphopt.passes.{path}") for name, path in (
    ("dce", "dead_code_elimination:DeadCodeElimination"),
    ("eliminate-identity", "eliminate_identity:EliminateIdentity"),
    ("eliminate-noops", "eliminate_noops:EliminateNoops"),
    ("drop-default-inputs", "drop_default_inputs:DropDefaultInputs"),
    ("cse", "cse:CommonSubexpressionElimination"),
    ("fold-constants", "fold_constants:FoldConstants"),
    ("fold-shape-chains", "fold_shape_chains:FoldShapeChains"),
    ("fold-shape-values", "fold_shape_values:FoldShapeValues"),
    ("fold-if", "fold_if:FoldIf"),
    ("merge-reshapes", "merge_reshapes:MergeReshapes"),
    ("merge-transposes", "merge_transposes:MergeTransposes"),
    ("merge-concats", "merge_concats:MergeConcats"),
    ("fuse-batchnorm", "fuse_batchnorm:FuseBatchNorm"),
    ("fuse-channel-affine", "fuse_channel_affine:FuseChannelAffine"),
    ("fuse-input-scale", "fuse_input_scale:FuseInputScale"),
    ("fuse-pad-conv", "fuse_pad_conv:FusePadConv"),
    ("fuse-matmul-add", "fuse_matmul_add:FuseMatMulAdd"),
    ("promote-shape-inputs", "promote_shape_inputs:PromoteShapeInputs"),
    ("raise-opset", "raise_opset:RaiseOpset"),
    ("equalize-cross-layer", "equalize_cross_layer:EqualizeCrossLayer"),
    ("smooth-quant", "smooth_quant:SmoothQuant"),
    ("correct-bias", "correct_bias:CorrectBias"),
    ("quantize-int8", "quantize_int8:QuantizeInt8"),
    ("prune-weights", "prune_weights:PruneWeights"),
    ("prune-channels", "prune_channels:PruneChannels"),
    ("fp16", "convert_precision:Fp16"),
    ("bf16", "convert_precision:Bf16"),
)]


def __getattr__(name: str):
    if name == "PASSES":  # every pass class, imported
        return [ref.load() for ref in LIBRARY]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    return Registry(LIBRARY, ALIASES, plugin_group=PLUGIN_GROUP, plugin_adapter=rule_as_pass)
