// Return codes shared by the C ABIs of the reference and kernel libraries. Failures are negative
// so that the kernel launchers can return a positive cudaError_t unchanged.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

enum warpres_status
{
    WARPRES_OK = 0,
    WARPRES_UNSUPPORTED_ARGUMENTS = -1,
    WARPRES_WORKSPACE_TOO_SMALL = -2,
    WARPRES_HOST_ALLOCATION_FAILED = -3
};

#ifdef __cplusplus
}
#endif
