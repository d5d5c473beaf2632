// C ABI of the CUDA launchers, exported by libwarpres_plugin_kernels (so tests can drive the
// kernels through cuda-python without TensorRT) and called by the TensorRT plugins.
//
// Pointers are device memory, contiguous NCHW, all of one element type: dtype 0 = float32,
// 1 = float16; arithmetic is float32 either way. The launchers only enqueue work on `stream`:
// no allocation, no synchronisation, so they can be captured into a CUDA graph.
// Returns WARPRES_OK (0), a negative warpres_status (common/status.h), or the positive
// cudaError_t of a failed launch.
#pragma once

#include "common/status.h"

#include <cuda_runtime_api.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum warpres_dtype
{
    WARPRES_FLOAT32 = 0,
    WARPRES_FLOAT16 = 1
};

// Bytes of device workspace warpres_modulated_conv_launch needs (float32 demodulation
// coefficients, and for up = 2 the transposed-convolution buffer), 0 for unsupported arguments.
size_t warpres_modulated_conv_workspace_size(int batch, int out_channels, int height, int width, int kernel, int up);

// x (B, I, H, W), weight (O, I, k, k), styles (B, I) -> out (B, O, H*up, W*up).
int warpres_modulated_conv_launch(void const* x, void const* weight, void const* styles, void* out, void* workspace,
    size_t workspace_size, int batch, int in_channels, int out_channels, int height, int width, int kernel, int up,
    int padding, int demodulate, int dtype, cudaStream_t stream);

// features (B, C, H, W), flow (B, 2, H, W) in pixels -> out (B, C, H, W). Needs no workspace.
int warpres_flow_warp_launch(void const* features, void const* flow, void* out, int batch, int channels, int height,
    int width, int dtype, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
