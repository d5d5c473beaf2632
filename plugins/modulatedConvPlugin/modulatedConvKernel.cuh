// StyleGAN2 modulated convolution, one output point at a time: the math shared by the CUDA
// kernels (modulatedConvKernel.cu) and the CPU reference (common/referenceApi.cpp).
//
// Decomposed form, as warpres.models.modulated_conv.modulated_conv2d(fused=False):
//   up = 1: out = d * conv2d(x * s, W, padding = k // 2)
//   up = 2: out = d * upfirdn2d(conv_transpose2d(x * s, W^T, stride 2), binomial 4x4, pad 1, gain 4)
// with d[b, o] = 1 / sqrt(sum_i s[b, i]^2 * sum_k W[o, i, k]^2 + 1e-8) when demodulating, else 1.
// Tensors are contiguous NCHW: x (B, I, H, W), weight (O, I, k, k), styles (B, I).
#pragma once

#include "common/hostDevice.h"

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace warpres
{

struct ModulatedConvShape
{
    int batch;
    int inChannels;
    int outChannels;
    int height;
    int width;
    int kernel;
    int up;
    int padding;
    bool demodulate;

    WARPRES_HD int outHeight() const
    {
        return height * up;
    }
    WARPRES_HD int outWidth() const
    {
        return width * up;
    }
    // The stride-2 transposed convolution's output, before the FIR filter trims it to 2H x 2W.
    WARPRES_HD int transposedHeight() const
    {
        return (height - 1) * up + kernel;
    }
    WARPRES_HD int transposedWidth() const
    {
        return (width - 1) * up + kernel;
    }
};

constexpr float kDemodulationEpsilon = 1e-8F;
constexpr int kUpsampleFilterTaps = 4;
// The FIR padding "before" for up = 2, k = 3 (warpres.models.modulated_conv._transposed_padding).
constexpr int kUpsampleFilterOffset = 1;

// Why a kernel size, up and padding are unsupported, or nullptr. The one place these rules live:
// the reference, the launchers and the TensorRT plugin all ask it.
inline char const* modulatedConvKernelProblem(int kernel, int up, int padding)
{
    if (kernel < 1 || kernel % 2 == 0)
    {
        return "the kernel size must be odd";
    }
    if (padding != kernel / 2)
    {
        return "padding must equal kernel // 2 (same-size convolution)";
    }
    if (up != 1 && up != 2)
    {
        return "up must be 1 or 2";
    }
    if (up == 2 && kernel != 3)
    {
        return "up = 2 supports only the 3x3 kernel (padding 1) StyleGAN2 uses";
    }
    return nullptr;
}

// Why a whole argument set is unsupported, or nullptr.
inline char const* modulatedConvArgumentProblem(ModulatedConvShape const& shape)
{
    if (shape.batch < 1 || shape.inChannels < 1 || shape.outChannels < 1 || shape.height < 1 || shape.width < 1)
    {
        return "batch, channels, height and width must be positive";
    }
    return modulatedConvKernelProblem(shape.kernel, shape.up, shape.padding);
}

// One tap of the normalised binomial [1, 3, 3, 1] / 8; the 2-D filter is the outer product.
WARPRES_HD float binomialTap(int index)
{
    return (index == 0 || index == kUpsampleFilterTaps - 1) ? 0.125F : 0.375F;
}

template <typename T>
WARPRES_HD float demodulationCoefficient(
    T const* weight, T const* styles, ModulatedConvShape const& shape, int batchIndex, int outChannel)
{
    int const taps = shape.kernel * shape.kernel;
    float energy = 0.0F;
    for (int i = 0; i < shape.inChannels; ++i)
    {
        T const* filter = weight + (static_cast<int64_t>(outChannel) * shape.inChannels + i) * taps;
        float filterEnergy = 0.0F;
        for (int t = 0; t < taps; ++t)
        {
            float const w = toFloat(filter[t]);
            filterEnergy += w * w;
        }
        float const s = toFloat(styles[static_cast<int64_t>(batchIndex) * shape.inChannels + i]);
        energy += s * s * filterEnergy;
    }
    return 1.0F / sqrtf(energy + kDemodulationEpsilon);
}

// up = 1: sum_i sum_{ky,kx} s[b,i] * x[b,i,y+ky-p,x+kx-p] * W[o,i,ky,kx], zeros outside x.
template <typename T>
WARPRES_HD float modulatedConvPoint(T const* x, T const* weight, T const* styles, ModulatedConvShape const& shape,
    int batchIndex, int outChannel, int row, int column)
{
    int const k = shape.kernel;
    int64_t const plane = static_cast<int64_t>(shape.height) * shape.width;
    float sum = 0.0F;
    for (int i = 0; i < shape.inChannels; ++i)
    {
        T const* input = x + (static_cast<int64_t>(batchIndex) * shape.inChannels + i) * plane;
        T const* filter = weight + (static_cast<int64_t>(outChannel) * shape.inChannels + i) * k * k;
        float const s = toFloat(styles[static_cast<int64_t>(batchIndex) * shape.inChannels + i]);
        for (int ky = 0; ky < k; ++ky)
        {
            int const sourceRow = row + ky - shape.padding;
            if (sourceRow < 0 || sourceRow >= shape.height)
            {
                continue;
            }
            for (int kx = 0; kx < k; ++kx)
            {
                int const sourceColumn = column + kx - shape.padding;
                if (sourceColumn < 0 || sourceColumn >= shape.width)
                {
                    continue;
                }
                float const modulated = s * toFloat(input[static_cast<int64_t>(sourceRow) * shape.width + sourceColumn]);
                sum += modulated * toFloat(filter[ky * k + kx]);
            }
        }
    }
    return sum;
}

// up = 2, first half: the transposed convolution t[b,o,Y,X] = sum over taps with Y = up*y + ky,
// X = up*x + kx of s[b,i] * x[b,i,y,x] * W[o,i,ky,kx], on the transposedHeight x transposedWidth grid.
template <typename T>
WARPRES_HD float transposedConvPoint(T const* x, T const* weight, T const* styles, ModulatedConvShape const& shape,
    int batchIndex, int outChannel, int row, int column)
{
    int const k = shape.kernel;
    int64_t const plane = static_cast<int64_t>(shape.height) * shape.width;
    float sum = 0.0F;
    for (int i = 0; i < shape.inChannels; ++i)
    {
        T const* input = x + (static_cast<int64_t>(batchIndex) * shape.inChannels + i) * plane;
        T const* filter = weight + (static_cast<int64_t>(outChannel) * shape.inChannels + i) * k * k;
        float const s = toFloat(styles[static_cast<int64_t>(batchIndex) * shape.inChannels + i]);
        for (int ky = 0; ky < k; ++ky)
        {
            int const stridedRow = row - ky;
            if (stridedRow < 0 || stridedRow % shape.up != 0 || stridedRow / shape.up >= shape.height)
            {
                continue;
            }
            for (int kx = 0; kx < k; ++kx)
            {
                int const stridedColumn = column - kx;
                if (stridedColumn < 0 || stridedColumn % shape.up != 0 || stridedColumn / shape.up >= shape.width)
                {
                    continue;
                }
                int64_t const source = static_cast<int64_t>(stridedRow / shape.up) * shape.width + stridedColumn / shape.up;
                float const modulated = s * toFloat(input[source]);
                sum += modulated * toFloat(filter[ky * k + kx]);
            }
        }
    }
    return sum;
}

// up = 2, second half: out[Y,X] = up^2 * sum_{a,b} f[a] f[b] t[Y+a-1, X+b-1], zeros outside t.
// `transposed` is the float32 t of one (batch, channel) plane. The filter is symmetric, so the
// flip of a true convolution changes nothing.
WARPRES_HD float upsampleFilterPoint(float const* transposed, ModulatedConvShape const& shape, int row, int column)
{
    int const transposedHeight = shape.transposedHeight();
    int const transposedWidth = shape.transposedWidth();
    float sum = 0.0F;
    for (int a = 0; a < kUpsampleFilterTaps; ++a)
    {
        int const sourceRow = row + a - kUpsampleFilterOffset;
        if (sourceRow < 0 || sourceRow >= transposedHeight)
        {
            continue;
        }
        float rowSum = 0.0F;
        for (int b = 0; b < kUpsampleFilterTaps; ++b)
        {
            int const sourceColumn = column + b - kUpsampleFilterOffset;
            if (sourceColumn < 0 || sourceColumn >= transposedWidth)
            {
                continue;
            }
            rowSum += binomialTap(b) * transposed[static_cast<int64_t>(sourceRow) * transposedWidth + sourceColumn];
        }
        sum += binomialTap(a) * rowSum;
    }
    return static_cast<float>(shape.up * shape.up) * sum;
}

} // namespace warpres
