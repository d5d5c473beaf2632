// The one spelling of "this function runs on both sides": nvcc compiles the kernel math for the
// GPU, and g++ compiles the very same functions into the CPU reference library the tests call.
#pragma once

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define WARPRES_HD __host__ __device__ __forceinline__
#else
#define WARPRES_HD inline
#endif

namespace warpres
{

// Every kernel accumulates in float32 whatever the tensor type; these overloads are how a
// templated kernel body reads and writes its element type.
WARPRES_HD float toFloat(float value)
{
    return value;
}

template <typename T>
WARPRES_HD T fromFloat(float value);

template <>
WARPRES_HD float fromFloat<float>(float value)
{
    return value;
}

#ifdef __CUDACC__
WARPRES_HD float toFloat(__half value)
{
    return __half2float(value);
}

template <>
WARPRES_HD __half fromFloat<__half>(float value)
{
    return __float2half_rn(value);
}
#endif

} // namespace warpres
