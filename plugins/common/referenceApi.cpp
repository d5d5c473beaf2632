#include "common/referenceApi.h"

#include "flowWarpPlugin/flowWarpKernel.cuh"
#include "modulatedConvPlugin/modulatedConvKernel.cuh"

#include <cstdint>
#include <new>
#include <vector>

namespace
{

using warpres::FlowWarpShape;
using warpres::ModulatedConvShape;

// The same three passes as the CUDA launcher, in the same order: demodulation coefficients, the
// transposed convolution into a float32 buffer (up = 2), then the output points.
void runModulatedConv(
    float const* input, float const* weight, float const* styles, float* out, ModulatedConvShape const& shape)
{
    std::vector<float> demodulation(static_cast<size_t>(shape.batch) * shape.outChannels, 1.0F);
    if (shape.demodulate)
    {
        for (int b = 0; b < shape.batch; ++b)
        {
            for (int o = 0; o < shape.outChannels; ++o)
            {
                demodulation[static_cast<size_t>(b) * shape.outChannels + o]
                    = warpres::demodulationCoefficient(weight, styles, shape, b, o);
            }
        }
    }

    int64_t const transposedPlane = static_cast<int64_t>(shape.transposedHeight()) * shape.transposedWidth();
    std::vector<float> transposed;
    if (shape.up > 1)
    {
        transposed.resize(static_cast<size_t>(shape.batch) * shape.outChannels * transposedPlane);
        for (int b = 0; b < shape.batch; ++b)
        {
            for (int o = 0; o < shape.outChannels; ++o)
            {
                float* plane = transposed.data() + (static_cast<int64_t>(b) * shape.outChannels + o) * transposedPlane;
                for (int row = 0; row < shape.transposedHeight(); ++row)
                {
                    for (int column = 0; column < shape.transposedWidth(); ++column)
                    {
                        plane[static_cast<int64_t>(row) * shape.transposedWidth() + column]
                            = warpres::transposedConvPoint(input, weight, styles, shape, b, o, row, column);
                    }
                }
            }
        }
    }

    int64_t const outPlane = static_cast<int64_t>(shape.outHeight()) * shape.outWidth();
    for (int b = 0; b < shape.batch; ++b)
    {
        for (int o = 0; o < shape.outChannels; ++o)
        {
            int64_t const channel = static_cast<int64_t>(b) * shape.outChannels + o;
            float const scale = demodulation[static_cast<size_t>(channel)];
            float* outPlaneStart = out + channel * outPlane;
            for (int row = 0; row < shape.outHeight(); ++row)
            {
                for (int column = 0; column < shape.outWidth(); ++column)
                {
                    float const value = shape.up > 1
                        ? warpres::upsampleFilterPoint(transposed.data() + channel * transposedPlane, shape, row, column)
                        : warpres::modulatedConvPoint(input, weight, styles, shape, b, o, row, column);
                    outPlaneStart[static_cast<int64_t>(row) * shape.outWidth() + column] = scale * value;
                }
            }
        }
    }
}

} // namespace

extern "C" int warpres_modulated_conv_reference(float const* x, float const* weight, float const* styles, float* out,
    int batch, int in_channels, int out_channels, int height, int width, int kernel, int up, int padding,
    int demodulate)
{
    ModulatedConvShape const shape{
        batch, in_channels, out_channels, height, width, kernel, up, padding, demodulate != 0};
    if (warpres::modulatedConvArgumentProblem(shape) != nullptr || (demodulate != 0 && demodulate != 1))
    {
        return WARPRES_UNSUPPORTED_ARGUMENTS;
    }
    try
    {
        runModulatedConv(x, weight, styles, out, shape);
    }
    catch (std::bad_alloc const&)
    {
        return WARPRES_HOST_ALLOCATION_FAILED;
    }
    return WARPRES_OK;
}

extern "C" int warpres_flow_warp_reference(
    float const* features, float const* flow, float* out, int batch, int channels, int height, int width)
{
    FlowWarpShape const shape{batch, channels, height, width};
    if (warpres::flowWarpArgumentProblem(shape) != nullptr)
    {
        return WARPRES_UNSUPPORTED_ARGUMENTS;
    }
    int64_t const plane = static_cast<int64_t>(height) * width;
    for (int b = 0; b < batch; ++b)
    {
        for (int c = 0; c < channels; ++c)
        {
            float* outPlane = out + (static_cast<int64_t>(b) * channels + c) * plane;
            for (int row = 0; row < height; ++row)
            {
                for (int column = 0; column < width; ++column)
                {
                    outPlane[static_cast<int64_t>(row) * width + column]
                        = warpres::flowWarpPoint(features, flow, shape, b, c, row, column);
                }
            }
        }
    }
    return WARPRES_OK;
}
