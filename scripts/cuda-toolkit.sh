#!/usr/bin/env bash
# Installs a CUDA toolkit (nvcc, headers, the static runtime) from NVIDIA's pip wheels into
# .cuda-toolkit/ when the machine has no nvcc, and prints the toolkit root. Use:
#   export CUDAToolkit_ROOT=$(scripts/cuda-toolkit.sh) && export PATH=$CUDAToolkit_ROOT/bin:$PATH
# The cu12 nvcc wheels hold only ptxas; CUDA 13's wheels hold the whole compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v nvcc >/dev/null 2>&1; then
  dirname "$(dirname "$(command -v nvcc)")"
  exit 0
fi
root=.cuda-toolkit
version=13.5.37
if [ ! -x "$root/nvidia/cu13/bin/nvcc" ]; then
  python3 -m pip install --quiet --no-deps --disable-pip-version-check --target "$root" \
    "nvidia-cuda-nvcc==$version" "nvidia-cuda-runtime==$version" "nvidia-cuda-crt==$version" \
    "nvidia-nvvm==$version" "nvidia-cuda-cccl" >&2
fi
# CMake's FindCUDAToolkit looks for the unversioned name the wheels leave out.
lib="$root/nvidia/cu13/lib"
[ -e "$lib/libcudart.so" ] || ln -s "$(basename "$(ls "$lib"/libcudart.so.* | head -n1)")" "$lib/libcudart.so"
echo "$PWD/$root/nvidia/cu13"
