// C ABI of libwarpres_plugin_reference: the plugin math on the CPU, float32, for tests (Python
// calls it through ctypes). Built from the same __host__ __device__ functions as the kernels.
// Returns WARPRES_OK (0) or a negative warpres_status (common/status.h).
#pragma once

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

// x (B, I, H, W), weight (O, I, k, k), styles (B, I) -> out (B, O, H*up, W*up).
int warpres_modulated_conv_reference(float const* x, float const* weight, float const* styles, float* out, int batch,
    int in_channels, int out_channels, int height, int width, int kernel, int up, int padding, int demodulate);

// features (B, C, H, W), flow (B, 2, H, W) in pixels -> out (B, C, H, W).
int warpres_flow_warp_reference(
    float const* features, float const* flow, float* out, int batch, int channels, int height, int width);

#ifdef __cplusplus
}
#endif
