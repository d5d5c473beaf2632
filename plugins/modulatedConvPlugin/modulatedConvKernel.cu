// CUDA kernels and the launcher of the modulated convolution: one thread per output point, the
// math in modulatedConvKernel.cuh. up = 2 runs in two passes through a float32 buffer in the
// workspace (transposed convolution, then the 4x4 FIR), as the PyTorch reference does.
#include "common/kernelApi.h"
#include "modulatedConvPlugin/modulatedConvKernel.cuh"

#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

namespace
{

using warpres::ModulatedConvShape;

constexpr int kThreadsPerBlock = 256;
// Grid-stride loops cover larger tensors; more blocks than this add no parallelism.
constexpr int64_t kMaxBlocks = 65535;
// Keeps the transposed-convolution buffer aligned for any access width after the coefficients.
constexpr size_t kWorkspaceAlignment = 256;

unsigned blocksFor(int64_t count)
{
    return static_cast<unsigned>(std::min<int64_t>((count + kThreadsPerBlock - 1) / kThreadsPerBlock, kMaxBlocks));
}

struct WorkspaceLayout
{
    size_t demodulationBytes; // (B, O) float32, rounded up to kWorkspaceAlignment
    size_t transposedBytes;   // (B, O, 2H+1, 2W+1) float32 for up = 2, else 0
    size_t total() const
    {
        return demodulationBytes + transposedBytes;
    }
};

WorkspaceLayout workspaceLayout(ModulatedConvShape const& shape)
{
    size_t const channels = static_cast<size_t>(shape.batch) * shape.outChannels;
    size_t const demodulationBytes
        = (channels * sizeof(float) + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment;
    size_t const transposedBytes = shape.up > 1
        ? channels * shape.transposedHeight() * shape.transposedWidth() * sizeof(float)
        : 0;
    return {demodulationBytes, transposedBytes};
}

template <typename T>
__global__ void demodulationKernel(T const* weight, T const* styles, ModulatedConvShape shape, float* demodulation)
{
    int64_t const count = static_cast<int64_t>(shape.batch) * shape.outChannels;
    for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < count;
         index += static_cast<int64_t>(blockDim.x) * gridDim.x)
    {
        int const batchIndex = static_cast<int>(index / shape.outChannels);
        int const outChannel = static_cast<int>(index % shape.outChannels);
        demodulation[index] = warpres::demodulationCoefficient(weight, styles, shape, batchIndex, outChannel);
    }
}

// up = 1. `demodulation` is null when not demodulating.
template <typename T>
__global__ void sameSizeConvKernel(
    T const* x, T const* weight, T const* styles, float const* demodulation, ModulatedConvShape shape, T* out)
{
    int64_t const plane = static_cast<int64_t>(shape.height) * shape.width;
    int64_t const count = static_cast<int64_t>(shape.batch) * shape.outChannels * plane;
    for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < count;
         index += static_cast<int64_t>(blockDim.x) * gridDim.x)
    {
        int64_t const channel = index / plane;
        int const row = static_cast<int>(index % plane / shape.width);
        int const column = static_cast<int>(index % shape.width);
        float value = warpres::modulatedConvPoint(x, weight, styles, shape,
            static_cast<int>(channel / shape.outChannels), static_cast<int>(channel % shape.outChannels), row, column);
        if (demodulation != nullptr)
        {
            value *= demodulation[channel];
        }
        out[index] = warpres::fromFloat<T>(value);
    }
}

template <typename T>
__global__ void transposedConvKernel(T const* x, T const* weight, T const* styles, ModulatedConvShape shape, float* transposed)
{
    int const width = shape.transposedWidth();
    int64_t const plane = static_cast<int64_t>(shape.transposedHeight()) * width;
    int64_t const count = static_cast<int64_t>(shape.batch) * shape.outChannels * plane;
    for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < count;
         index += static_cast<int64_t>(blockDim.x) * gridDim.x)
    {
        int64_t const channel = index / plane;
        transposed[index] = warpres::transposedConvPoint(x, weight, styles, shape,
            static_cast<int>(channel / shape.outChannels), static_cast<int>(channel % shape.outChannels),
            static_cast<int>(index % plane / width), static_cast<int>(index % width));
    }
}

// up = 2, second pass. `demodulation` is null when not demodulating.
template <typename T>
__global__ void upsampleFilterKernel(float const* transposed, float const* demodulation, ModulatedConvShape shape, T* out)
{
    int const width = shape.outWidth();
    int64_t const plane = static_cast<int64_t>(shape.outHeight()) * width;
    int64_t const transposedPlane = static_cast<int64_t>(shape.transposedHeight()) * shape.transposedWidth();
    int64_t const count = static_cast<int64_t>(shape.batch) * shape.outChannels * plane;
    for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < count;
         index += static_cast<int64_t>(blockDim.x) * gridDim.x)
    {
        int64_t const channel = index / plane;
        float value = warpres::upsampleFilterPoint(transposed + channel * transposedPlane, shape,
            static_cast<int>(index % plane / width), static_cast<int>(index % width));
        if (demodulation != nullptr)
        {
            value *= demodulation[channel];
        }
        out[index] = warpres::fromFloat<T>(value);
    }
}

template <typename T>
int launchModulatedConv(void const* xData, void const* weightData, void const* stylesData, void* outData,
    void* workspace, ModulatedConvShape const& shape, cudaStream_t stream)
{
    auto const* x = static_cast<T const*>(xData);
    auto const* weight = static_cast<T const*>(weightData);
    auto const* styles = static_cast<T const*>(stylesData);
    auto* out = static_cast<T*>(outData);
    WorkspaceLayout const layout = workspaceLayout(shape);
    float* demodulation = nullptr;
    if (shape.demodulate)
    {
        demodulation = static_cast<float*>(workspace);
        int64_t const channels = static_cast<int64_t>(shape.batch) * shape.outChannels;
        demodulationKernel<T><<<blocksFor(channels), kThreadsPerBlock, 0, stream>>>(weight, styles, shape, demodulation);
        if (cudaError_t const error = cudaGetLastError(); error != cudaSuccess)
        {
            return static_cast<int>(error);
        }
    }
    int64_t const outCount = static_cast<int64_t>(shape.batch) * shape.outChannels * shape.outHeight() * shape.outWidth();
    if (shape.up == 1)
    {
        sameSizeConvKernel<T><<<blocksFor(outCount), kThreadsPerBlock, 0, stream>>>(
            x, weight, styles, demodulation, shape, out);
        return static_cast<int>(cudaGetLastError());
    }
    float* transposed = reinterpret_cast<float*>(static_cast<char*>(workspace) + layout.demodulationBytes);
    transposedConvKernel<T><<<blocksFor(static_cast<int64_t>(layout.transposedBytes / sizeof(float))),
        kThreadsPerBlock, 0, stream>>>(x, weight, styles, shape, transposed);
    if (cudaError_t const error = cudaGetLastError(); error != cudaSuccess)
    {
        return static_cast<int>(error);
    }
    upsampleFilterKernel<T><<<blocksFor(outCount), kThreadsPerBlock, 0, stream>>>(transposed, demodulation, shape, out);
    return static_cast<int>(cudaGetLastError());
}

} // namespace

extern "C" size_t warpres_modulated_conv_workspace_size(int batch, int out_channels, int height, int width, int kernel, int up)
{
    if (batch < 1 || out_channels < 1 || height < 1 || width < 1
        || warpres::modulatedConvKernelProblem(kernel, up, kernel / 2) != nullptr)
    {
        return 0;
    }
    // The input channels and the demodulation flag do not size any buffer.
    ModulatedConvShape shape{};
    shape.batch = batch;
    shape.outChannels = out_channels;
    shape.height = height;
    shape.width = width;
    shape.kernel = kernel;
    shape.up = up;
    return workspaceLayout(shape).total();
}

extern "C" int warpres_modulated_conv_launch(void const* x, void const* weight, void const* styles, void* out,
    void* workspace, size_t workspace_size, int batch, int in_channels, int out_channels, int height, int width,
    int kernel, int up, int padding, int demodulate, int dtype, cudaStream_t stream)
{
    ModulatedConvShape const shape{
        batch, in_channels, out_channels, height, width, kernel, up, padding, demodulate != 0};
    if (warpres::modulatedConvArgumentProblem(shape) != nullptr || (demodulate != 0 && demodulate != 1))
    {
        return WARPRES_UNSUPPORTED_ARGUMENTS;
    }
    if (workspace_size < workspaceLayout(shape).total())
    {
        return WARPRES_WORKSPACE_TOO_SMALL;
    }
    switch (dtype)
    {
    case WARPRES_FLOAT32: return launchModulatedConv<float>(x, weight, styles, out, workspace, shape, stream);
    case WARPRES_FLOAT16: return launchModulatedConv<__half>(x, weight, styles, out, workspace, shape, stream);
    default: return WARPRES_UNSUPPORTED_ARGUMENTS;
    }
}
