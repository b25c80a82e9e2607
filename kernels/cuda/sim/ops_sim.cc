// The CUDA kernels compiled by the host compiler for the interpreter.
#include "kernels/cuda/ops.cu"
