"""The share of each kind of op in one step, from torch.profiler's self times (what docs/speed.md reports)."""
from __future__ import annotations

from collections import Counter
from typing import Callable

#: aten ops by kind; convolutions are told apart by their weight (depthwise k x k, pointwise 1 x 1)
KINDS = {
    "batch_norm": ("native_batch_norm", "_batch_norm_impl_index", "batch_norm"),
    "batch_norm_backward": ("native_batch_norm_backward",),
    "pooling": ("max_pool2d_with_indices", "avg_pool2d"),
    "pooling_backward": ("max_pool2d_with_indices_backward", "avg_pool2d_backward"),
    "matmul": ("mm", "addmm", "bmm", "linear"),
    "elementwise": ("mul", "add", "add_", "sub", "div", "clamp_min", "relu", "threshold_backward", "sigmoid",
                    "sigmoid_backward", "tanh", "tanh_backward", "mul_", "addcmul_", "lerp_", "neg", "where"),
    "reduction": ("sum", "mean", "norm", "linalg_vector_norm", "_log_softmax", "_log_softmax_backward_data",
                  "nll_loss_forward", "nll_loss_backward", "max"),
    "memory": ("copy_", "fill_", "zero_", "cat", "stack", "empty", "empty_like", "empty_strided", "zeros",
               "zeros_like", "clone", "contiguous", "resize_", "new_zeros", "split", "index_select", "embedding"),
}
_KIND_OF = {name: kind for kind, names in KINDS.items() for name in names}


def _conv_kind(key: str, shapes: list) -> str:
    weight = shapes[2] if "backward" in key else shapes[1]
    direction = "backward" if "backward" in key else "forward"
    if len(weight) == 4 and weight[1] == 1 and weight[0] > 1:
        return f"depthwise_conv_{weight[2]}x{weight[3]}_{direction}"
    if len(weight) == 4 and weight[2:] == [1, 1]:
        return f"pointwise_conv_{direction}"
    return f"other_conv_{direction}"


def op_shares(step: Callable[[], None], repeats: int = 2) -> dict:
    """``repeats`` runs of ``step`` under the profiler (one is noisy on a shared 2-core machine): each
    kind's self milliseconds per step and share of the total."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(repeats):
            step()
    ms: Counter = Counter()
    for event in prof.key_averages(group_by_input_shape=True):
        key = event.key
        name = key.split("::", 1)[1] if key.startswith("aten::") else None
        if name in ("mkldnn_convolution", "convolution_backward", "_convolution", "convolution", "conv2d",
                    "_nnpack_spatial_convolution", "thnn_conv2d", "_slow_conv2d_forward", "_slow_conv2d_backward"):
            kind = _conv_kind(key, event.input_shapes) if name in ("mkldnn_convolution", "convolution_backward") \
                else "convolution_dispatch"
        elif name is not None:
            kind = _KIND_OF.get(name, "other_aten")
        elif key.startswith("autograd::") or key.endswith("Backward0") or key.endswith("Backward1"):
            kind = "autograd_engine"
        else:
            kind = "python_and_other"
        ms[kind] += event.self_cpu_time_total / 1e3 / repeats
    total = sum(ms.values())
    return {"profile_ms_per_step": round(total, 1),
            "shares": {kind: round(v / total, 4) for kind, v in ms.most_common()},
            "ms": {kind: round(v, 1) for kind, v in ms.most_common()}}
