#!/usr/bin/env bash
# Install the project with everything it trains, tests and measures with, from this repository's files.
set -euo pipefail
cd "$(dirname "$0")/.."
# The CPU build of torch first: pinned, because an unpinned torch pulls a CUDA build of several GB.
python -m pip install torch==2.13.0
# torchattacks without its metadata's dependencies: they pull a torchvision that fails to import beside
# the CPU torch, and torchattacks' code never imports it. Its real dependencies are in the [train] extra.
python -m pip install --no-deps torchattacks==3.5.1
python -m pip install -e ".[train,cpu,video,cluster,dev]"
# The fused C++/CUDA steps (cpp_ext): a distribution of its own, module diffdefense_fused, built by CMake. Its CUDA
# part is built when nvcc is found, and then a CUDA compile error fails the install. Print what was built: the GPU
# architectures read from the built binary (sm_87 for Jetson Orin, sm_90 for Hopper, ...).
python -m pip install ./cpp_ext
python -m diffdefense_fused
# The MNIST and KMNIST files into the data root (default ~/.cache/diffdefense), checked against the package's
# sha256 table, from a data folder beside the checkout where there is one. Elsewhere fetch them later from the
# official mirrors with `diffdefense data fetch mnist` (and kmnist); the shipped samples need no data.
if [ -d ../shared/data ]; then
  for dataset in mnist kmnist; do diffdefense data fetch "$dataset" --from ../shared/data; done
fi
