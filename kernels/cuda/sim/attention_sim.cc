// The attention kernels compiled by the host compiler for the interpreter.
#include "kernels/cuda/attention.cu"
