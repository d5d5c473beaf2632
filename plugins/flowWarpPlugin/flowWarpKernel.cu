// CUDA kernel and launcher of the flow warp: one thread per output point, the math in
// flowWarpKernel.cuh.
#include "common/kernelApi.h"
#include "flowWarpPlugin/flowWarpKernel.cuh"

#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

namespace
{

using warpres::FlowWarpShape;

constexpr int kThreadsPerBlock = 256;
// Grid-stride loops cover larger tensors; more blocks than this add no parallelism.
constexpr int64_t kMaxBlocks = 65535;

template <typename T>
__global__ void flowWarpKernel(T const* features, T const* flow, FlowWarpShape shape, T* out)
{
    int64_t const plane = static_cast<int64_t>(shape.height) * shape.width;
    int64_t const count = static_cast<int64_t>(shape.batch) * shape.channels * plane;
    for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < count;
         index += static_cast<int64_t>(blockDim.x) * gridDim.x)
    {
        int64_t const channel = index / plane;
        float const value = warpres::flowWarpPoint(features, flow, shape, static_cast<int>(channel / shape.channels),
            static_cast<int>(channel % shape.channels), static_cast<int>(index % plane / shape.width),
            static_cast<int>(index % shape.width));
        out[index] = warpres::fromFloat<T>(value);
    }
}

template <typename T>
int launchFlowWarp(void const* features, void const* flow, void* out, FlowWarpShape const& shape, cudaStream_t stream)
{
    int64_t const count = static_cast<int64_t>(shape.batch) * shape.channels * shape.height * shape.width;
    auto const blocks
        = static_cast<unsigned>(std::min<int64_t>((count + kThreadsPerBlock - 1) / kThreadsPerBlock, kMaxBlocks));
    flowWarpKernel<T><<<blocks, kThreadsPerBlock, 0, stream>>>(
        static_cast<T const*>(features), static_cast<T const*>(flow), shape, static_cast<T*>(out));
    return static_cast<int>(cudaGetLastError());
}

} // namespace

extern "C" int warpres_flow_warp_launch(void const* features, void const* flow, void* out, int batch, int channels,
    int height, int width, int dtype, cudaStream_t stream)
{
    FlowWarpShape const shape{batch, channels, height, width};
    if (warpres::flowWarpArgumentProblem(shape) != nullptr)
    {
        return WARPRES_UNSUPPORTED_ARGUMENTS;
    }
    switch (dtype)
    {
    case WARPRES_FLOAT32: return launchFlowWarp<float>(features, flow, out, shape, stream);
    case WARPRES_FLOAT16: return launchFlowWarp<__half>(features, flow, out, shape, stream);
    default: return WARPRES_UNSUPPORTED_ARGUMENTS;
    }
}
