#!/usr/bin/env bash
# Installs a CUDA toolkit (nvcc, headers, the static runtime, cuBLASLt's and NCCL's headers) from NVIDIA's pip wheels into
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
# cuBLASLt's header (the library itself is opened at run time): unpacked from the nvidia-cublas
# wheel without its 600 MB of libraries.
if [ ! -f "$root/nvidia/cu13/include/cublasLt.h" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --disable-pip-version-check --dest "$tmp" "nvidia-cublas==13.10.0.20" >&2
  python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for n in z.namelist():
    if n.startswith("nvidia/cu13/include/"): z.extract(n, sys.argv[2])' "$tmp"/nvidia_cublas-*.whl "$root"
  rm -rf "$tmp"
fi
# NCCL's header likewise (libnccl.so.2 is opened at run time): from the nvidia-nccl wheel.
if [ ! -f "$root/nvidia/cu13/include/nccl.h" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --disable-pip-version-check --dest "$tmp" "nvidia-nccl-cu13==2.32.3" >&2
  python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
with open(sys.argv[2], "wb") as out: out.write(z.read("nvidia/nccl/include/nccl.h"))' "$tmp"/nvidia_nccl_cu13-*.whl "$root/nvidia/cu13/include/nccl.h"
  rm -rf "$tmp"
fi
# CMake's FindCUDAToolkit looks for the unversioned name the wheels leave out.
lib="$root/nvidia/cu13/lib"
[ -e "$lib/libcudart.so" ] || ln -s "$(basename "$(ls "$lib"/libcudart.so.* | head -n1)")" "$lib/libcudart.so"
echo "$PWD/$root/nvidia/cu13"
