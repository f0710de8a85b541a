#!/usr/bin/env bash
# Every GPU check in one call, for a machine with an NVIDIA GPU (about 8 minutes at most):
#   1. install what the GPU path needs (from wheels in .whl/ where the machine has no package index);
#   2. run every GPU test (onnxruntime's CUDA and TensorRT providers, TensorRT engines and their cache, the device
#      loop, cpp_ext's CUDA kernels);
#   3. build the shipped bundle's TensorRT engines: float32, fp16, and int8 from the QDQ graphs;
#   4. print a latency table per backend and precision (diffdefense bench on the shipped samples).
# Usage: bash benchmarks/gpu_check.sh   (results and logs in $OUT, default /tmp/gpu_check)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 DIFFDEFENSE_ENGINE_CACHE="$OUT/engines"
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv | tee "$OUT/gpu.txt" || { echo "no NVIDIA GPU"; exit 1; }

# 1. onnxruntime-gpu replaces onnxruntime (one module: never both), then tensorrt, the project and cpp_ext (CUDA).
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site --upgrade .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  python3 -m pip uninstall -y -q onnxruntime 2>/dev/null
  python3 -m pip install -q onnxruntime-gpu tensorrt polygraphy onnx click safetensors pytest hypothesis || exit 1
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || true
python3 -m pip install -q --no-build-isolation ./cpp_ext >>"$OUT/install.log" 2>&1 || echo "cpp_ext: see install.log"
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
python3 -c "import tensorrt as t; print('tensorrt', t.__version__)" || echo "tensorrt: not importable"

# 2. GPU tests (they skip, with their reason, whatever this machine lacks).
timeout 240 python3 -m pytest -q -rs tests/test_gpu_providers.py tests/test_tensorrt.py tests/test_engine_cache.py \
  tests/test_device_loop.py tests/test_cpp_ext_cuda.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -25

# 3. Engines for every graph of the shipped MNIST bundles (an int8 QDQ graph gives an int8 engine).
timeout 180 python3 - <<'PY' 2>&1 | tee "$OUT/engines.log"
from diffdefense.runtime.backends.tensorrt_engines import cached_engine
from diffdefense.runtime.bundle import load_bundle
from diffdefense.shipped import bundle_dir

for shipped in ("mnist", "mnist-fast"):
    bundle = load_bundle(bundle_dir(shipped))
    for name in bundle.manifest.graph_files():
        for fp16 in (False, True):
            print(shipped, name, "fp16" if fp16 else "fp32", cached_engine(bundle.root / name, fp16=fp16))
PY

# 4. Latency per backend and precision, at the bundle's default preset (batches of 1 and 8).
for args in "--provider cpu" "--provider cpu --precision int8" "--provider cuda" "--provider tensorrt" \
  "--provider tensorrt-engine" "--provider tensorrt-engine --fp16" "--provider tensorrt-engine --precision int8" \
  "--bundle mnist-fast --provider cpu" "--bundle mnist-fast --provider tensorrt-engine --fp16"; do
  name=$(echo "$args" | tr -d '-' | tr ' ' '_')
  timeout 60 diffdefense bench $args --rounds 5 --json >"$OUT/bench_$name.json" 2>"$OUT/bench_$name.err" \
    || echo "$args: failed ($(tail -1 "$OUT/bench_$name.err"))"
done
python3 - "$OUT" <<'PY'
import json, pathlib, sys

print("| backend and precision | batch | per image p50 (ms) | U-Net call p50 (ms) |")
print("| --- | ---: | ---: | ---: |")
for path in sorted(pathlib.Path(sys.argv[1]).glob("bench_*.json")):
    try:
        report = json.loads(path.read_text())
    except ValueError:
        continue
    for row in report["rows"]:
        print(
            f"| {path.stem[6:]} ({report['provider']}) | {row['batch']} | {row['end_to_end_per_image']['p50_ms']:.2f} "
            f"| {row['unet_call']['p50_ms']:.2f} |"
        )
PY
