"""INT8 quantization with PyTorch 2 export (PT2E) quantization from ``torchao``.

* PTQ: the float student is captured with ``torch.export`` (dynamic batch), ``prepare_pt2e``
  inserts observers where the engine's quantizer annotates the graph, a few training batches
  calibrate the activation ranges, and ``convert_pt2e`` produces the int8 network: int8
  weights (per-channel) and quantize / dequantize pairs around the activations (per-tensor),
  the QDQ form that ONNX Runtime, ExecuTorch and inductor lower to int8 kernels.
* QAT: ``prepare_qat_pt2e`` on the network captured in training mode folds BatchNorm into
  the convolutions (simulated) and inserts fake quantization; training goes on with it, and
  ``convert_pt2e`` ends it the same way.

Engines (``compress.engine``), i.e. which quantizer annotates the graph:

* ``x86``: ``X86InductorQuantizer`` (torchao): uint8 activations, int8 per-channel weights,
  the patterns that inductor (``torch.compile``) fuses into oneDNN int8 kernels on x86 CPUs.
* ``onnxruntime``: ExecuTorch's ``XNNPACKQuantizer`` patterns (every convolution, matmul
  and addition quantized) with uint8 activations and int8 per-channel weights: the U8S8 QDQ
  form that ONNX Runtime's x86 kernels run fastest (int8 activations and the x86 patterns,
  with float convolutions before residual additions, ran slower than float there).
* ``xnnpack``: ExecuTorch's ``XNNPACKQuantizer``: symmetric int8, the patterns XNNPACK runs
  on ARM phones (and x86), through ExecuTorch.

``compress.reduce_range`` (on for ``onnxruntime`` by default) keeps the weights in 7 bits
(:data:`REDUCED_WEIGHTS`): ONNX Runtime's x86 kernels on CPUs without VNNI saturate 8-bit ones.

A converted network keeps its activation scales and zero points as constants in the graph;
:func:`convert` also stores them as buffers (``_qparam_<i>``), so the state dict holds
everything, and loading it into a freshly built skeleton writes them back into the graph
(:func:`quantized_skeleton`). The eager PyTorch module runs the reference arithmetic (int8
values, float kernels): its accuracy is the int8 network's, its speed is not; time the
deployed artifact (``latency.backend``: onnxruntime, executorch, torch_compile).
"""

from __future__ import annotations

import copy
import dataclasses
import types
from collections.abc import Iterable
from contextlib import contextmanager

import torch
import torch.nn as nn

from .. import _executorch
from .._errors import ConfigError

QUANT_FLOW = "pt2e"  # recorded in an int8 student's spec: how its state dict is laid out
MAX_BATCH = 4096  # the captured graph's batch dimension is dynamic, up to this size


def _ops():
    """The quantized_decomposed q/dq overloads with constant (float, int) qparams."""
    import torchao.quantization.pt2e  # noqa: F401  (registers torch.ops.quantized_decomposed)

    ops = torch.ops.quantized_decomposed
    return {ops.quantize_per_tensor.default, ops.dequantize_per_tensor.default}


ENGINES = ("x86", "onnxruntime", "xnnpack")


def use_engine(engine: str) -> None:
    """Check that ``engine``'s quantizer can be had here (one-line error naming the package)."""
    if engine not in ENGINES:
        raise ConfigError(f"compress.engine: {engine!r} is not a PT2E quantizer here; use one of {', '.join(ENGINES)}")
    if engine != "x86" and not _executorch.available():
        raise ConfigError(f"compress.engine: {engine} needs ExecuTorch's quantizer, which is not installed: pip install executorch")


def _quantizer(engine: str, qat: bool, reduce_range: bool = False):
    use_engine(engine)
    if engine in ("xnnpack", "onnxruntime"):
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

        config = get_symmetric_quantization_config(is_per_channel=True, is_qat=qat)
        if engine == "onnxruntime":  # uint8 activations: ONNX Runtime's fast U8S8 kernels on x86
            uint8 = dataclasses.replace(config.input_activation, dtype=torch.uint8, quant_min=0, quant_max=255)
            config = dataclasses.replace(config, input_activation=uint8, output_activation=uint8)
        return XNNPACKQuantizer().set_global(_weights_in(config, reduce_range))
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer, get_default_x86_inductor_quantization_config

    return X86InductorQuantizer().set_global(_weights_in(get_default_x86_inductor_quantization_config(is_qat=qat), reduce_range))


REDUCED_WEIGHTS = (-63, 63)
"""int8 weight values with ``compress.reduce_range``: 7 bits, symmetric. A u8 activation
(255) times such a weight, two of them added, stays within int16 (2 x 255 x 63 = 32,130),
which ONNX Runtime's x86 kernels without VNNI (VPMADDUBSW) otherwise saturate."""


def _weights_in(config, reduce_range: bool):
    if not reduce_range:
        return config
    low, high = REDUCED_WEIGHTS
    return dataclasses.replace(config, weight=dataclasses.replace(config.weight, quant_min=low, quant_max=high))


def capture(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """``model`` as an ATen graph (``torch.export``, dynamic batch), with each call of a
    module used more than once (a ResNet block's ReLU) made a partition of its own: the
    quantizers match patterns by source module, and a module called twice reads to them as
    one partition with two outputs (``ValueError: Input partition has more than one output
    node``)."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    graph_module = torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
    _split_reused_sources(graph_module.graph)
    return graph_module


def _split_reused_sources(graph: torch.fx.Graph) -> None:
    """Give each call of a module its own name in the nodes' ``nn_module_stack``: export
    tells the calls apart in the stack's keys (``...relu``, ``...relu@1``) but gives them the
    same module path, by which the quantizers group nodes (see :func:`capture`)."""
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            continue
        key, (path, cls) = list(stack.items())[-1]
        _, at, call = key.rpartition("@")
        if at and call.isdigit():
            stack[key] = (f"{path}@{call}", cls)


def _trainable(graph_module: nn.Module) -> nn.Module:
    """An exported graph refuses ``.train()`` / ``.eval()``; here they switch the ``training``
    argument of its BatchNorm and dropout nodes (the only ops that differ between the modes
    here), set the ``training`` flags and return the module, as ``nn.Module``'s do. torchao's
    ``move_exported_model_to_train`` rewrites dropout with p=0.5 whatever p was (0.18)."""
    graph_module.train = types.MethodType(_switch_mode, graph_module)  # type: ignore[method-assign]
    graph_module.eval = types.MethodType(lambda self: self.train(False), graph_module)  # type: ignore[method-assign]
    return graph_module


def _mode_args() -> dict:
    """ATen op -> position of its ``training`` argument."""
    aten = torch.ops.aten
    return {aten.batch_norm.default: 5, aten.dropout.default: 2, aten.dropout_.default: 2, aten.feature_dropout.default: 2}


def _counts_batches(node: torch.fx.Node) -> bool:
    """BatchNorm's ``num_batches_tracked += 1``, a node of its own in an exported training graph."""
    first = node.args[0] if node.target is torch.ops.aten.add_.Tensor else None
    return isinstance(first, torch.fx.Node) and first.op == "get_attr" and str(first.target).endswith("num_batches_tracked")


def _switch_mode(self: torch.fx.GraphModule, mode: bool = True) -> torch.fx.GraphModule:
    positions = _mode_args()
    changed = False
    for node in self.graph.nodes:
        if node.op != "call_function":
            continue
        at = positions.get(node.target)
        if at is not None and node.args[at] != mode:
            node.args = (*node.args[:at], mode, *node.args[at + 1 :])
            changed = True
        elif _counts_batches(node) and node.args[1] != int(mode):  # eval counts no batch
            node.args = (node.args[0], int(mode))
            changed = True
    if changed:
        self.recompile()
    for module in self.modules():
        module.training = mode
    return self


def prepare_ptq(model: nn.Module, example: torch.Tensor, engine: str, reduce_range: bool = False) -> nn.Module:
    """Observers inserted (eval mode); run calibration batches through the result."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    quantizer = _quantizer(engine, qat=False, reduce_range=reduce_range)
    model.eval()
    prepared = _trainable(prepare_pt2e(capture(model, example), quantizer))
    return prepared.eval()


def prepare_qat(model: nn.Module, example: torch.Tensor, engine: str, reduce_range: bool = False) -> nn.Module:
    """BatchNorm folded and fake quantization inserted (train mode)."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    quantizer = _quantizer(engine, qat=True, reduce_range=reduce_range)
    model.train()
    prepared = _trainable(prepare_qat_pt2e(capture(model, example), quantizer))
    return prepared.train()


@torch.no_grad()
def calibrate(prepared: nn.Module, inputs: Iterable[torch.Tensor]) -> None:
    prepared.eval()
    for x in inputs:
        prepared(x)


def convert(prepared: nn.Module) -> nn.Module:
    """The int8 network (eval mode) from a calibrated or QAT-trained prepared one, without
    the float weights it no longer reads, its activation qparams mirrored in buffers."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    prepared.eval()
    with _qat_fold_fast(prepared):
        converted = convert_pt2e(prepared)
    _drop_unused_attributes(converted)
    _mirror_qparams(converted)
    return _trainable(converted).eval()


_PATTERN_CACHE: dict = {}
_CONV_OPS = {"conv1d": "aten.conv1d.", "conv2d": "aten.conv2d.", "conv_transpose1d": "aten.conv_transpose1d.", "conv_transpose2d": "aten.conv_transpose2d."}


@contextmanager
def _qat_fold_fast(graph_module: torch.fx.GraphModule):
    """convert_pt2e folds a QAT network's BatchNorm by matching 24 patterns for each of four
    convolution kinds, each pattern captured by ``torch.export`` (torchao 0.18): 15-18 s per
    conversion of a small CNN here, where PTQ takes 0.3 s. Here it tries only the kinds of
    convolution the graph holds, and captures each pattern once per process (a copy is
    handed out each time). Without these torchao internals it runs as torchao wrote it."""
    try:
        from torchao.quantization.pt2e import qat_utils

        helper, capture_pattern = qat_utils._fold_conv_bn_qat_helper, qat_utils._get_aten_graph_module_for_pattern
    except (ImportError, AttributeError):
        yield
        return
    present = {str(n.target) for n in graph_module.graph.nodes if n.op == "call_function"}

    def fold_present(m, conv_fn, example_inputs, is_cuda):
        prefix = _CONV_OPS.get(getattr(conv_fn, "__name__", ""))
        if prefix is not None and not any(name.startswith(prefix) for name in present):
            return m
        return helper(m, conv_fn, example_inputs, is_cuda)

    def captured_once(pattern, example_inputs, is_cuda=False, **kwargs):
        fn = getattr(pattern, "fn", pattern)  # torchao wraps the pattern function in a module
        code = getattr(fn, "__code__", None)
        if code is None:
            return capture_pattern(pattern, example_inputs, is_cuda, **kwargs)
        cells = tuple(c.cell_contents for c in fn.__closure__ or ())
        shapes = tuple(tuple(x.shape) if isinstance(x, torch.Tensor) else x for x in example_inputs)
        key = (code, cells, shapes, is_cuda, tuple(sorted((k, tuple(v.shape) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items())))
        if key not in _PATTERN_CACHE:
            _PATTERN_CACHE[key] = capture_pattern(pattern, example_inputs, is_cuda, **kwargs)
        return copy.deepcopy(_PATTERN_CACHE[key])

    qat_utils._fold_conv_bn_qat_helper, qat_utils._get_aten_graph_module_for_pattern = fold_present, captured_once
    try:
        yield
    finally:
        qat_utils._fold_conv_bn_qat_helper, qat_utils._get_aten_graph_module_for_pattern = helper, capture_pattern


def _drop_unused_attributes(graph_module: torch.fx.GraphModule) -> None:
    """convert_pt2e folds the weights into int8 constants but keeps the float originals as
    attributes: they would double the state dict (and ``size_mb``)."""
    graph_module.graph.eliminate_dead_code()
    used = {node.target for node in graph_module.graph.nodes if node.op == "get_attr"}
    for name in [n for n, _ in graph_module.named_parameters()] + [n for n, _ in graph_module.named_buffers()]:
        if name not in used:
            owner, _, leaf = name.rpartition(".")
            module = graph_module.get_submodule(owner) if owner else graph_module
            delattr(module, leaf)
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()


def _qdq_nodes(graph_module: torch.fx.GraphModule) -> list[torch.fx.Node]:
    ops = _ops()
    return [n for n in graph_module.graph.nodes if n.op == "call_function" and n.target in ops]


def _mirror_qparams(graph_module: torch.fx.GraphModule) -> None:
    """Buffers ``_qparam_<i>`` = (scale, zero point) of the i-th per-tensor q/dq node, and a
    load hook that writes loaded values back into the graph's constants."""
    for i, node in enumerate(_qdq_nodes(graph_module)):
        graph_module.register_buffer(f"_qparam_{i}", torch.tensor([float(node.args[1]), float(node.args[2])], dtype=torch.float64))
    graph_module.register_load_state_dict_post_hook(_qparams_into_graph)


def _qparams_into_graph(graph_module: torch.fx.GraphModule, incompatible_keys) -> None:
    for i, node in enumerate(_qdq_nodes(graph_module)):
        scale, zero_point = getattr(graph_module, f"_qparam_{i}").tolist()
        node.args = (node.args[0], scale, int(zero_point), *node.args[3:])
    graph_module.recompile()


def quantized_skeleton(float_model: nn.Module, example: torch.Tensor, method: str, engine: str, reduce_range: bool = False) -> nn.Module:
    """An int8 network of the right structure for ``load_state_dict`` of a saved one. One
    pass over ``example`` gives every observer a shape (per-channel weight scales are as long
    as the channels); the values it observes are replaced by the state dict's."""
    prepare = prepare_qat if method == "qat" else prepare_ptq
    prepared = prepare(float_model, example, engine, reduce_range)
    calibrate(prepared, [example])
    return convert(prepared)


def is_quantized(model: nn.Module) -> bool:
    """True for a converted int8 network (quantize / dequantize nodes, no observers left)."""
    if not isinstance(model, torch.fx.GraphModule):
        return False
    return bool(_qdq_nodes(model)) and not any(n.op == "call_module" and "activation_post_process" in str(n.target) for n in model.graph.nodes)


def output_step(model: nn.Module) -> float | None:
    """The quantization step of the last quantized activation before the logits (the unit in
    which an int8 file's logits may differ from PyTorch's); None for a float network."""
    if not is_quantized(model):
        return None
    nodes = _qdq_nodes(model)
    return float(nodes[-1].args[1]) if nodes else None
