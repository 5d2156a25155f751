// LT_HOST_DEVICE marks small inline functions that both backends compile: host code, and with
// nvcc device code too, so a value (a rounding, a random draw) is the same bits on each.
#pragma once

#ifdef __CUDACC__
#define LT_HOST_DEVICE __host__ __device__
#else
#define LT_HOST_DEVICE
#endif
