"""Make torchvision usable next to the CPU torch wheel.

The torchvision wheels on the package index are CUDA builds whose C++ ops (torchvision/_C.so) do
not load beside torch==2.13.0+cpu. Detection models need ``torchvision::nms`` and
``torchvision::roi_align``; this module defines them with Python CPU kernels through
``torch.library`` *before* torchvision is imported, then tells torchvision its ops are present.
The ONNX symbolics torchvision registers for these op names (NonMaxSuppression, RoiAlign) are
then used by the TorchScript exporter exactly as with the real C++ ops.

Import this module instead of torchvision: ``from tv_ops import torchvision``.
"""

from __future__ import annotations

import torch

_lib = torch.library.Library("torchvision", "DEF")
_lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_lib.define(
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio, bool aligned) -> Tensor"
)


def _nms_cpu(dets, scores, iou_threshold):
    if dets.numel() == 0:
        return torch.empty((0,), dtype=torch.long, device=dets.device)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort(descending=True)
    keep = []
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        xx1 = torch.maximum(x1[i], x1)
        yy1 = torch.maximum(y1[i], y1)
        xx2 = torch.minimum(x2[i], x2)
        yy2 = torch.minimum(y2[i], y2)
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[i] + areas - inter)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


def _roi_align_cpu(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    import inspect
    import sys

    ra = sys.modules["torchvision.ops.roi_align"]  # the module (torchvision.ops.roi_align is the function)
    fn = inspect.unwrap(ra._roi_align)  # the eager reference implementation, not its lazy torch.compile wrapper
    return fn(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


_lib.impl("nms", _nms_cpu, "CPU")
_lib.impl("qnms", _nms_cpu, "CPU")
_lib.impl("roi_align", _roi_align_cpu, "CPU")


@torch.library.register_fake("torchvision::roi_align")
def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))


import torchvision  # noqa: E402
import torchvision.extension  # noqa: E402



def _has_ops() -> bool:  # a plain def: torchvision's script_if_tracing helpers script it
    return True


torchvision.extension._has_ops = _has_ops  # our Python kernels stand in for _C
import sys  # noqa: E402

import torchvision.ops.roi_align  # noqa: E402

sys.modules["torchvision.ops.roi_align"]._has_ops = _has_ops  # imported there by name

__all__ = ["torchvision"]
