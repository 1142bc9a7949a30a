"""The GPU node's acceptance kits: kernel_check (the CUDA kernel alone: python3, numpy and nvcc,
nothing installed; `make gpu-kernel-check`; nvcc and compute-sanitizer driven by toolchain) and
loader_check (the whole GPU path through DALI; `make gpu-check`)."""
