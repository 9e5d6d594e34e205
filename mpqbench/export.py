"""A PTQ-quantized model to ONNX with QuantizeLinear / DequantizeLinear, checked in onnxruntime.

The exported graph is the QDQ form that ONNX runtimes fuse into integer kernels:

- every quantized weight is stored as an INT8 initializer holding its integer levels (for
  ``w_bits`` <= 8 they lie in ``[-2^(b-1), 2^(b-1) - 1]``), followed by a per-output-channel
  ``DequantizeLinear`` with the quantizer's scales;
- every quantized layer input goes through ``QuantizeLinear`` to UINT8 with the calibrated
  scale and zero point, a ``Clip`` to ``[0, 2^a - 1]`` when ``a_bits`` < 8 (opset 17 has no
  narrower integer type), and ``DequantizeLinear``.

Limits, stated: weights below 8 bits are stored one byte each (ONNX opset 17 has no 2-, 3-, 5-
or 6-bit type; INT4 needs opset 21), so the file is about 8 / w_bits times the cost model's
size; only static (PTQ) quantizers export, LSQ steps do not (quantize with ``run_ptq``, or
calibrate static quantizers from the learned steps first).
"""

from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

from mpqbench.data import Split
from mpqbench.errors import MpqbenchError
from mpqbench.evaluate import limit_images
from mpqbench.quant.modules import QuantMixin, StaticQuantizer, quant_layers

OPSET = 17


@dataclass
class ExportResult:
    """Where the file went, its size on disk, and what was quantized in it."""

    path: Path
    bytes_on_disk: int
    quantized_weights: int
    quantized_inputs: int

    @property
    def mib_on_disk(self) -> float:
        return self.bytes_on_disk / 2**20


def _dequantized_copy(qmodel: nn.Module) -> tuple[nn.Module, dict[str, QuantMixin]]:
    """A plain FP model whose layers hold the quantized weights (values on the grid)."""
    plain = copy.deepcopy(qmodel).cpu().eval()
    layers = dict(quant_layers(plain))
    originals = dict(quant_layers(qmodel))
    for name, module in layers.items():
        with torch.no_grad():
            module.weight.copy_(originals[name].quantized_weight().detach().cpu())
        module.weight_quantizer = None
        module.input_quantizer = None
    return plain, originals


def _check_exportable(originals: dict[str, QuantMixin]) -> None:
    for name, module in originals.items():
        for role, quantizer in (("weight", module.weight_quantizer),
                                ("input", module.input_quantizer)):
            if quantizer is None:
                continue
            if not isinstance(quantizer, StaticQuantizer) or quantizer.mode != "on":
                raise MpqbenchError(
                    f"{name}: the {role} quantizer is {type(quantizer).__name__} "
                    f"(mode {getattr(quantizer, 'mode', '-')}); ONNX export takes calibrated "
                    f"static quantizers: quantize the model with ptq.run_ptq first")
            if quantizer.bits > 8:
                raise MpqbenchError(f"{name}: {role} at {quantizer.bits} bits; QDQ export "
                                    f"covers 2..8 bits (use 32 to leave a layer in FP)")


def _weight_levels(module: QuantMixin) -> tuple[np.ndarray, np.ndarray]:
    """(integer levels as int8, per-channel scales) of a static per-channel weight quantizer."""
    quantizer = module.weight_quantizer
    weight = module.weight.detach().cpu()
    scale = quantizer.scale.detach().cpu().reshape(-1, *([1] * (weight.dim() - 1)))
    zero = quantizer.zero_point.detach().cpu().reshape(scale.shape)
    levels = torch.clamp(torch.round(weight / scale) + zero, quantizer.scheme.qmin,
                         quantizer.scheme.qmax)
    return levels.to(torch.int8).numpy(), quantizer.scale.detach().cpu().float().numpy()


def export_onnx(qmodel: nn.Module, input_shape: tuple[int, ...], path: str | Path,
                opset: int = OPSET) -> ExportResult:
    """Write ``qmodel`` (static PTQ quantizers, BN folded, e.g. ``run_ptq(...).model``) to
    ``path`` as a QDQ ONNX graph with one input ``image`` (N, C, H, W) and output ``logits``."""
    path = Path(path)
    originals = dict(quant_layers(qmodel))
    _check_exportable(originals)
    plain, _ = _dequantized_copy(qmodel)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's notes on constant folding
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(plain, torch.zeros(1, *input_shape), buffer, dynamo=False,
                          opset_version=opset, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)
    graph_model = onnx.load_from_string(buffer.getvalue())
    graph = graph_model.graph
    initializers = {init.name: init for init in graph.initializer}
    by_weight = {name: module.quantized_weight().detach().cpu().numpy()
                 for name, module in originals.items()}
    new_nodes, weights_done, inputs_done = [], 0, 0
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or node.input[1] not in initializers:
            new_nodes.append(node)
            continue
        stored = numpy_helper.to_array(initializers[node.input[1]])
        matches = [name for name, w in by_weight.items()
                   if w.shape == stored.shape and np.array_equal(w, stored)]
        if len(matches) != 1:
            raise MpqbenchError(f"ONNX node {node.name}: its weight matches {len(matches)} "
                                f"quantized layers; cannot place its quantizers")
        name = matches[0]
        module = originals[name]
        if module.input_quantizer is not None:
            new_nodes.extend(_input_qdq(node, name, module.input_quantizer, graph))
            inputs_done += 1
        if module.weight_quantizer is not None:
            levels, scales = _weight_levels(module)
            q_name, s_name, z_name = f"{name}.weight_q", f"{name}.weight_scale", \
                f"{name}.weight_zero"
            graph.initializer.append(numpy_helper.from_array(levels, q_name))
            graph.initializer.append(numpy_helper.from_array(scales, s_name))
            graph.initializer.append(numpy_helper.from_array(np.zeros_like(scales, np.int8),
                                                             z_name))
            dq_out = f"{name}.weight_dq"
            new_nodes.append(helper.make_node("DequantizeLinear", [q_name, s_name, z_name],
                                              [dq_out], name=f"{name}.weight_DQ", axis=0))
            graph.initializer.remove(initializers[node.input[1]])
            node.input[1] = dq_out
            weights_done += 1
        new_nodes.append(node)
    missing = len([m for m in originals.values() if m.weight_quantizer is not None])
    if weights_done != missing:
        raise MpqbenchError(f"placed {weights_done} of {missing} weight quantizers in the ONNX "
                            f"graph; a layer was folded away or duplicated by the exporter")
    del graph.node[:]
    graph.node.extend(new_nodes)
    onnx.checker.check_model(graph_model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(graph_model, tmp)
    tmp.replace(path)
    return ExportResult(path, path.stat().st_size, weights_done, inputs_done)


def _input_qdq(node: onnx.NodeProto, name: str, quantizer: StaticQuantizer,
               graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """QuantizeLinear (UINT8) [-> Clip to the a-bit range] -> DequantizeLinear on input 0."""
    scheme = quantizer.scheme
    if scheme.signed or scheme.per_channel:
        raise MpqbenchError(f"{name}: only unsigned per-tensor input quantizers export")
    scale = np.array(float(quantizer.scale.detach().cpu()), dtype=np.float32)
    zero = np.array(int(quantizer.zero_point.detach().cpu()), dtype=np.uint8)
    s_name, z_name = f"{name}.input_scale", f"{name}.input_zero"
    graph.initializer.append(numpy_helper.from_array(scale, s_name))
    graph.initializer.append(numpy_helper.from_array(zero, z_name))
    q_out, dq_out = f"{name}.input_q", f"{name}.input_dq"
    nodes = [helper.make_node("QuantizeLinear", [node.input[0], s_name, z_name], [q_out],
                              name=f"{name}.input_Q")]
    if scheme.qmax < 255 or scheme.qmin > 0:
        lo, hi = f"{name}.input_qmin", f"{name}.input_qmax"
        graph.initializer.append(helper.make_tensor(lo, TensorProto.UINT8, [], [scheme.qmin]))
        graph.initializer.append(helper.make_tensor(hi, TensorProto.UINT8, [], [scheme.qmax]))
        clipped = f"{name}.input_q_clipped"
        nodes.append(helper.make_node("Clip", [q_out, lo, hi], [clipped],
                                      name=f"{name}.input_clip"))
        q_out = clipped
    nodes.append(helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out],
                                  name=f"{name}.input_DQ"))
    node.input[0] = dq_out
    return nodes


def onnx_top1(path: str | Path, split: Split, batch_size: int = 500,
              max_images: int | None = None) -> tuple[float, int]:
    """Top-1 (percent) of the ONNX file on ``split`` in onnxruntime (CPU), and the image count.

    ``max_images``: the same seeded subset ``evaluate.evaluate`` takes, so the two compare on
    the same images."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    correct = seen = 0
    for x, y in limit_images(split, max_images).batches(batch_size):
        logits = session.run(["logits"], {"image": x.numpy()})[0]
        correct += int((logits.argmax(1) == y.numpy()).sum())
        seen += len(y)
    return 100.0 * correct / max(seen, 1), seen
