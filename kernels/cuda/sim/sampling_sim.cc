// The sampling kernels compiled by the host compiler for the interpreter.
#include "kernels/cuda/sampling.cu"
