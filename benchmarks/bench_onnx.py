#!/usr/bin/env python
"""Peak memory and time of winspect on large ONNX models: weights embedded, and external.

Builds in a temporary directory (deleted at the end) two models of ``--size-gb`` GB of
float32 weights (a chain of MatMul nodes; one tensor of a third of the size, the rest in
128 MB tensors):

* ``embedded.onnx``: every weight in its initializer's ``raw_data``, one protobuf file;
* ``external.onnx`` + ``weights.bin``: the same weights as external data.

The graph skeleton and every TensorProto header are serialised by the ``onnx`` package;
the weight bytes are streamed into place, so making a 1.5 GB model needs no 1.5 GB of
memory (onnx itself would need 2-3x that). A small model made the same way is first
checked against ``onnx.load`` value for value. Then ``winspect MODEL --csv out.csv -q``
runs as a child process: wall time, throughput, peak RSS (``os.wait4`` rusage).

    python benchmarks/bench_onnx.py            # 1.5 GB each (needs ~1.6 GB in $TMPDIR: one model at a time)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import GB, machine, run_child, winspect_cmd  # noqa: E402  (puts the repository on sys.path)
from tests.helpers import varint  # noqa: E402

CHUNK = 1 << 24  # floats written at a time


def layout(size: int) -> list[tuple[str, tuple[int, int]]]:
    """(name, shape) of float32 matrices adding up to about ``size`` bytes."""
    big_rows = max(1, size // 3 // 4 // 4096)
    shapes = [("blocks.0.big.weight", (big_rows, 4096))]
    rest, i = size - big_rows * 4096 * 4, 1
    while rest > 0:
        rows = max(1, min(8192, rest // 4 // 4096))
        shapes.append((f"blocks.{i}.fc.weight", (rows, 4096)))
        rest -= rows * 4096 * 4
        i += 1
    return shapes


def write_values(f, numel: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for start in range(0, numel, CHUNK):
        rng.standard_normal(min(CHUNK, numel - start), dtype=np.float32).tofile(f)


def skeleton(shapes, external: str | None):
    """The ModelProto without its graph, the graph's nodes, and each initializer's header bytes."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", name], [f"h{i + 1}"], name=f"/{name}/MatMul")
             for i, (name, _) in enumerate(shapes)]
    graph = helper.make_graph(nodes, "g", [], [])
    headers, offset = [], 0
    for name, shape in shapes:
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)
        nbytes = int(np.prod(shape)) * 4
        if external:
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", external), ("offset", str(offset)), ("length", str(nbytes))):
                t.external_data.add(key=k, value=v)
            offset += nbytes
        headers.append((t.SerializeToString(), nbytes))
    model = helper.make_model(onnx.GraphProto(), opset_imports=[helper.make_opsetid("", 17)])
    model.ClearField("graph")
    return model.SerializeToString(), graph.SerializeToString(), headers


def write_model(path: Path, shapes, external: bool) -> int:
    """Write the model (and its external data): the file sizes in bytes."""
    model, graph, headers = skeleton(shapes, "weights.bin" if external else None)
    inits = []
    for header, nbytes in headers:
        body = len(header) + (0 if external else 1 + len(varint(nbytes)) + nbytes)
        inits.append(b"\x2a" + varint(body) + header + (b"" if external else b"\x4a" + varint(nbytes)))
    graph_len = len(graph) + sum(len(i) for i in inits) + (0 if external else sum(n for _, n in headers))
    with open(path, "wb") as f:
        f.write(model + b"\x3a" + varint(graph_len) + graph)
        for seed, (prefix, (_, nbytes)) in enumerate(zip(inits, headers)):
            f.write(prefix)
            if not external:
                write_values(f, nbytes // 4, seed)
    if external:
        with open(path.parent / "weights.bin", "wb") as f:
            for seed, (_, nbytes) in enumerate(headers):
                write_values(f, nbytes // 4, seed)
        return path.stat().st_size + (path.parent / "weights.bin").stat().st_size
    return path.stat().st_size


def check_writer(tmp: Path) -> None:
    """A small model from the same writer reads back identically through onnx.load."""
    import onnx
    from onnx import numpy_helper

    shapes = [("a.weight", (3, 4096)), ("b.weight", (2, 4096))]
    for external in (False, True):
        d = tmp / f"check_{external}"
        d.mkdir()
        write_model(d / "m.onnx", shapes, external)
        got = {t.name: numpy_helper.to_array(t, str(d)) for t in onnx.load(str(d / "m.onnx")).graph.initializer}
        for seed, (name, shape) in enumerate(shapes):
            want = np.random.default_rng(seed).standard_normal(int(np.prod(shape)), dtype=np.float32)
            assert np.array_equal(got[name].reshape(-1), want), (external, name)


def measure(label: str, path: Path, size: int, tmp: Path) -> dict:
    r = run_child(winspect_cmd(path, "--csv", str(tmp / "out.csv"), "-q"))
    rows = sum(1 for _ in open(tmp / "out.csv")) - 1 if r["status"] == 0 else 0
    print(f"{label:9s} {size / GB:5.2f} GB  {r['seconds']:6.2f} s  {size / GB / r['seconds']:5.2f} GB/s  "
          f"peak RSS {r['peak_rss_mb']:4.0f} MB  {rows} tensors  exit {r['status']}")
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=1.5)
    ap.add_argument("--tmp", default=None, help="directory for the models (default: the system's)")
    args = ap.parse_args(argv)
    print(machine())
    tmp = Path(tempfile.mkdtemp(prefix="winspect-onnx-", dir=args.tmp))
    try:
        check_writer(tmp)
        shapes = layout(int(args.size_gb * GB))
        results = {}
        for label, external in (("embedded", False), ("external", True)):
            d = tmp / label
            d.mkdir()
            size = write_model(d / f"{label}.onnx", shapes, external)
            results[label] = measure(label, d / f"{label}.onnx", size, tmp)
            shutil.rmtree(d)
        ok = all(r["status"] == 0 and r["peak_rss_mb"] <= 600 for r in results.values())
        print("peak RSS <= 600 MB each:", "yes" if ok else "NO")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
