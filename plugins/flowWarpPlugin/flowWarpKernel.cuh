// Backward bilinear warp, one output point at a time: the math shared by the CUDA kernel
// (flowWarpKernel.cu) and the CPU reference (common/referenceApi.cpp).
//
// As warpres.models.flow.warp (grid_sample bilinear, zeros padding, align_corners=True), but in
// pixel coordinates directly: out[b,c,y,x] samples features[b,c] at (x + flow[b,0,y,x],
// y + flow[b,1,y,x]); each of the four taps outside the grid contributes zero.
// Tensors are contiguous NCHW: features (B, C, H, W), flow (B, 2, H, W).
#pragma once

#include "common/hostDevice.h"

#include <cmath>
#include <cstdint>

namespace warpres
{

struct FlowWarpShape
{
    int batch;
    int channels;
    int height;
    int width;
};

// Why arguments are unsupported, or nullptr (asked by the reference, the launcher and the plugin).
inline char const* flowWarpArgumentProblem(FlowWarpShape const& shape)
{
    if (shape.batch < 1 || shape.channels < 1 || shape.height < 1 || shape.width < 1)
    {
        return "batch, channels, height and width must be positive";
    }
    return nullptr;
}

template <typename T>
WARPRES_HD float flowWarpPoint(
    T const* features, T const* flow, FlowWarpShape const& shape, int batchIndex, int channel, int row, int column)
{
    int64_t const plane = static_cast<int64_t>(shape.height) * shape.width;
    int64_t const pixel = static_cast<int64_t>(row) * shape.width + column;
    T const* batchFlow = flow + static_cast<int64_t>(batchIndex) * 2 * plane;
    float const sourceX = static_cast<float>(column) + toFloat(batchFlow[pixel]);
    float const sourceY = static_cast<float>(row) + toFloat(batchFlow[plane + pixel]);
    // Beyond one pixel outside the grid every tap is zero. Returning early also keeps huge or NaN
    // positions away from the float-to-int conversion below, which would be undefined.
    if (!(sourceX > -1.0F && sourceX < static_cast<float>(shape.width) && sourceY > -1.0F
            && sourceY < static_cast<float>(shape.height)))
    {
        return 0.0F;
    }
    float const floorX = floorf(sourceX);
    float const floorY = floorf(sourceY);
    int const left = static_cast<int>(floorX);
    int const top = static_cast<int>(floorY);
    float const rightWeight = sourceX - floorX;
    float const bottomWeight = sourceY - floorY;

    T const* input = features + (static_cast<int64_t>(batchIndex) * shape.channels + channel) * plane;
    float sum = 0.0F;
    for (int dy = 0; dy < 2; ++dy)
    {
        int const sourceRow = top + dy;
        if (sourceRow < 0 || sourceRow >= shape.height)
        {
            continue;
        }
        float const rowWeight = dy == 0 ? 1.0F - bottomWeight : bottomWeight;
        for (int dx = 0; dx < 2; ++dx)
        {
            int const sourceColumn = left + dx;
            if (sourceColumn < 0 || sourceColumn >= shape.width)
            {
                continue;
            }
            float const columnWeight = dx == 0 ? 1.0F - rightWeight : rightWeight;
            sum += rowWeight * columnWeight * toFloat(input[static_cast<int64_t>(sourceRow) * shape.width + sourceColumn]);
        }
    }
    return sum;
}

} // namespace warpres
