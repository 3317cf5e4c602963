"""ResNet-18 inference: fastconv (loaded from a torch.save file, fused) vs
PyTorch and onnxruntime, with logits checked against torch's and the install
footprints side by side.

The subject is torchvision's ResNet-18 (224x224, 1000 classes), defined in
PyTorch with torchvision's names (``benchmarks/torch_resnet.py``; torchvision
is not installable here), with random weights and non-trivial BatchNorm
statistics, saved with ``torch.save``. fastconv reads that file with
``fastconv.load`` (no torch involved), loads it into
``fastconv.models.resnet18`` key for key and runs ``fastconv.nn.fuse`` of it
(BatchNorm folded into the convolutions, ReLU in their output store). PyTorch
runs the module in eval mode under ``no_grad``; onnxruntime runs the
``torch.onnx.export`` of it (dynamic batch) with ``intra_op_num_threads``.
Every framework gets the same thread count (2 by default). Latency is the
median of ``--rounds`` x ``--repeats`` calls per batch size, the frameworks
taking turns (``fastconv.bench.side_by_side``).

Footprints: the unpacked size is the installed files of each distribution
(its RECORD; for fastconv the package's .py, .pyi and compiled modules, what
its wheel holds); wheel sizes are read from ``--wheel-dir`` when the wheels
are there (``pip download torch onnxruntime --no-deps -d DIR`` and
``pip wheel . --no-deps -w DIR`` for fastconv), else from ``dist/`` for
fastconv, else reported as unknown.

    python benchmarks/resnet18_inference.py                   # batch 1 and 8, 2 threads
    python benchmarks/resnet18_inference.py --repeats 1 --rounds 1 --batches 1
    python benchmarks/resnet18_inference.py --json resnet18.json --wheel-dir wheels/
    python benchmarks/resnet18_inference.py --layers --batches 1  # where the time goes

With ``--layers``, each distinct convolution of the network is also timed
alone, side by side: the fused fastconv layer, ``torch.nn.functional.conv2d``
(+ ReLU) with the same folded weight, onnxruntime on an export of that
convolution (+ ReLU), and NumPy's GEMM (OpenBLAS) of the same M x K x N,
the roofline of an im2col convolution. Their sums over the
network's layers (each times its count) show how much of the whole model's
time is convolution and how far each layer is from its GEMM.
"""

import argparse
import glob
import json
import os
import platform
import sys
import tempfile
from importlib import metadata

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from torch_resnet import randomise_batch_norm, torch_resnet  # noqa: E402

import fastconv  # noqa: E402
from fastconv import models, nn  # noqa: E402
from fastconv.bench import side_by_side  # noqa: E402


def _mb(n):
    return None if n is None else n / 1e6


def unpacked_size(dist):
    """Bytes of the installed files of a distribution (None if not installed)."""
    if dist == "fastconv":
        root = os.path.dirname(fastconv.__file__)
        total = 0
        for dirpath, _, files in os.walk(root):
            if "__pycache__" in dirpath:
                continue
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files
                         if f.endswith((".py", ".pyi", ".so", ".pyd", "py.typed")))
        return total
    try:
        files = metadata.files(dist) or []
    except metadata.PackageNotFoundError:
        return None
    total = 0
    for f in files:
        p = f.locate()
        if os.path.isfile(p) and "__pycache__" not in str(f):
            total += os.path.getsize(p)
    return total


def wheel_size(dist, wheel_dir):
    patterns = []
    if wheel_dir:
        patterns.append(os.path.join(wheel_dir, f"{dist}-*.whl"))
    if dist == "fastconv":
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        patterns.append(os.path.join(here, "dist", "fastconv-*.whl"))
    for pattern in patterns:
        found = sorted(glob.glob(pattern))
        if found:
            return os.path.getsize(found[-1]), os.path.basename(found[-1])
    return None, None


def footprints(wheel_dir):
    rows = {}
    for dist in ("fastconv", "numpy", "torch", "onnxruntime"):
        size, name = wheel_size(dist, wheel_dir)
        rows[dist] = {"unpacked_mb": _mb(unpacked_size(dist)), "wheel_mb": _mb(size),
                      "wheel": name}
    return rows


def build(torch, workdir, seed=0):
    """The torch model (eval), the torch.save path, the fused fastconv model."""
    torch.manual_seed(seed)
    tmodel = randomise_batch_norm(torch, torch_resnet(torch), seed).eval()
    path = os.path.join(workdir, "resnet18.pth")
    torch.save(tmodel.state_dict(), path)
    model = models.resnet18()
    model.load_state_dict(fastconv.load(path))  # strict: every key, every shape
    return tmodel, path, nn.fuse(model)


def export_onnx(torch, tmodel, workdir):
    path = os.path.join(workdir, "resnet18.onnx")
    x = torch.randn(1, 3, 224, 224)
    kwargs = dict(input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    try:
        torch.onnx.export(tmodel, (x,), path, dynamo=False, **kwargs)
    except TypeError:  # a torch without the dynamo keyword
        torch.onnx.export(tmodel, (x,), path, **kwargs)
    return path


def check_logits(ours, expected):
    scale = float(np.max(np.abs(expected)))
    diff = float(np.max(np.abs(ours - expected)))
    ok = bool(np.allclose(ours, expected, rtol=1e-4, atol=1e-4 * scale))
    return {"max_abs_diff": diff, "max_abs_logit": scale, "rel_to_max": diff / scale,
            "allclose_rtol_1e-4": ok}


def _conv_calls(fused, x):
    """[(layer, input shape)] of each FusedConv2d call of one forward of ``x``."""
    calls = []

    def walk(module):
        if isinstance(module, nn.FusedConv2d):
            def record(inp, module=module, forward=module.forward):
                calls.append((module, inp.shape))
                return forward(inp)
            module.forward = record
        for _, child in module._children():
            walk(child)

    walk(fused)
    fused(x)
    for layer, _ in calls:
        del layer.forward  # the class's own again
    return calls


def _layer_session(torch, ort, opts, layer, relu, path):
    """An onnxruntime session of one fused layer: its folded weight and bias,
    its ReLU, exported from a torch module."""
    conv = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                           layer.stride, layer.padding, layer.dilation, layer.groups)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.array(layer.weight)))
        conv.bias.copy_(torch.from_numpy(layer.bias))
    module = torch.nn.Sequential(conv, torch.nn.ReLU()) if relu else conv
    x = torch.zeros(1, layer.in_channels, 8 * layer.kernel_size[0], 8 * layer.kernel_size[1])
    kwargs = dict(input_names=["x"], output_names=["y"],
                  dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    try:
        torch.onnx.export(module.eval(), (x,), path, dynamo=False, **kwargs)
    except TypeError:  # a torch without the dynamo keyword
        torch.onnx.export(module.eval(), (x,), path, **kwargs)
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def layer_table(torch, ort, opts, workdir, fused, x, repeats, rounds):
    """Each distinct convolution of one forward of ``x``, timed alone side by
    side: fastconv, torch and onnxruntime (same folded weight and ReLU) and
    the GEMM."""
    import torch.nn.functional as TF

    rows = {}
    for layer, shape in _conv_calls(fused, x):
        key = (shape, layer.weight.shape, layer.stride, layer.padding)
        if key in rows:
            rows[key]["count"] += 1
            continue
        rng = np.random.default_rng(0)
        xi = rng.standard_normal(shape).astype(np.float32)
        out = layer(xi)
        m, k = layer.weight.shape[0], int(np.prod(layer.weight.shape[1:]))
        n = out.shape[0] * out.shape[2] * out.shape[3]
        a = np.ascontiguousarray(layer.weight.reshape(m, k))
        b = rng.standard_normal((k, n)).astype(np.float32)
        xt, wt, bt = (torch.from_numpy(v) for v in (xi, np.array(layer.weight), layer.bias))
        relu = layer.activation == "relu"
        session = _layer_session(torch, ort, opts, layer, relu,
                                 os.path.join(workdir, f"layer{len(rows)}.onnx"))
        np.testing.assert_allclose(session.run(None, {"x": xi})[0], out, rtol=1e-3, atol=1e-3)

        def run_torch(xt=xt, wt=wt, bt=bt, layer=layer, relu=relu):
            with torch.no_grad():
                y = TF.conv2d(xt, wt, bt, layer.stride, layer.padding)
                return TF.relu(y) if relu else y

        t = side_by_side({"fastconv": lambda xi=xi, layer=layer: layer(xi), "torch": run_torch,
                          "onnxruntime": lambda xi=xi, s=session: s.run(None, {"x": xi}),
                          "gemm": lambda a=a, b=b: a @ b}, repeats, rounds=rounds)
        plan = fastconv.conv_plan(shape, layer.weight.shape, stride=layer.stride,
                                  padding=layer.padding)["forward"]
        rows[key] = {"input": list(shape), "weight": list(layer.weight.shape),
                     "stride": layer.stride[0], "count": 1, "path": plan,
                     "gflop": 2 * m * k * n / 1e9, **{f"{k}_ms": 1e3 * v for k, v in t.items()}}
    return list(rows.values())


def print_layers(rows):
    print(f"\n{'input':>18} {'weight':>18} {'s':>1} {'x':>2} {'path':>8} {'fastconv':>9} "
          f"{'torch':>7} {'onnxrt':>7} {'gemm':>7} {'GF/s':>5} {'%gemm':>6}")
    total = {"fastconv": 0.0, "torch": 0.0, "onnxruntime": 0.0, "gemm": 0.0}
    for r in rows:
        for k in total:
            total[k] += r["count"] * r[f"{k}_ms"]
        print(f"{'x'.join(map(str, r['input'])):>18} {'x'.join(map(str, r['weight'])):>18} "
              f"{r['stride']:>1} {r['count']:>2} {r['path']:>8} {r['fastconv_ms']:>9.3f} "
              f"{r['torch_ms']:>7.3f} {r['onnxruntime_ms']:>7.3f} {r['gemm_ms']:>7.3f} "
              f"{r['gflop'] / r['fastconv_ms'] * 1e3:>5.0f} "
              f"{100 * r['gemm_ms'] / r['fastconv_ms']:>5.0f}%")
    print(f"{'sum over the network (ms)':>60} {total['fastconv']:>9.2f} {total['torch']:>7.2f} "
          f"{total['onnxruntime']:>7.2f} {total['gemm']:>7.2f}")
    return total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10, help="timed calls per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--wheel-dir", default="", help="a directory holding the wheels")
    p.add_argument("--json", default="", help="write the results to this file")
    p.add_argument("--layers", action="store_true",
                   help="also time each distinct convolution alone (see above)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.rounds < 1:
        p.error("Expected --repeats and --rounds >= 1")

    import onnxruntime as ort
    import torch

    fastconv.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    results = {"platform": platform.platform(), "threads": args.threads,
               "fastconv": fastconv.__version__, "torch": torch.__version__,
               "onnxruntime": ort.__version__, "batches": {}}
    with tempfile.TemporaryDirectory() as workdir:
        tmodel, _, fused = build(torch, workdir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(export_onnx(torch, tmodel, workdir), opts,
                                       providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        print(f"ResNet-18, 224x224, 1000 classes, float32, {args.threads} threads; "
              f"fastconv {fastconv.__version__} (fused), torch {torch.__version__} "
              f"(eval, no_grad), onnxruntime {ort.__version__}")
        print(f"median of {args.rounds} rounds x {args.repeats} calls\n")
        print(f"{'batch':>5} {'fastconv ms':>12} {'torch ms':>9} {'onnxrt ms':>10} "
              f"{'torch/fc':>9} {'ort/fc':>7}  logits vs torch")
        for n in args.batches:
            x = rng.standard_normal((n, 3, 224, 224)).astype(np.float32)
            xt = torch.from_numpy(x)
            with torch.no_grad():
                expected = tmodel(xt).numpy()
            check = check_logits(fused(x), expected)
            check_ort = check_logits(session.run(None, {"input": x})[0], expected)

            def run_torch(xt=xt):
                with torch.no_grad():
                    return tmodel(xt)

            t = side_by_side({"fastconv": lambda x=x: fused(x), "torch": run_torch,
                              "onnxruntime": lambda x=x: session.run(None, {"input": x})},
                             args.repeats, rounds=args.rounds)
            results["batches"][n] = {"ms": {k: 1e3 * v for k, v in t.items()},
                                     "logits": check, "onnxruntime_logits": check_ort}
            print(f"{n:>5} {1e3 * t['fastconv']:>12.2f} {1e3 * t['torch']:>9.2f} "
                  f"{1e3 * t['onnxruntime']:>10.2f} {t['torch'] / t['fastconv']:>9.2f} "
                  f"{t['onnxruntime'] / t['fastconv']:>7.2f}  max|diff| "
                  f"{check['max_abs_diff']:.1e} of max|logit| {check['max_abs_logit']:.2f}: "
                  f"{'equal' if check['allclose_rtol_1e-4'] else 'NOT equal'} at rtol 1e-4")
            if args.layers:
                rows = layer_table(torch, ort, opts, workdir, fused, x, args.repeats,
                                   args.rounds)
                results["batches"][n]["layers"] = rows
                results["batches"][n]["layer_sums_ms"] = print_layers(rows)
    results["footprints"] = footprints(args.wheel_dir)
    print("\ninstall footprint (MB)    wheel   unpacked")
    for dist, r in results["footprints"].items():
        wheel = "unknown" if r["wheel_mb"] is None else f"{r['wheel_mb']:.1f}"
        unpacked = "n/a" if r["unpacked_mb"] is None else f"{r['unpacked_mb']:.1f}"
        print(f"  {dist:<20} {wheel:>8} {unpacked:>10}")
    print("(fastconv needs numpy; ratios above 1: fastconv is faster. Wheel sizes: see "
          "--wheel-dir)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
