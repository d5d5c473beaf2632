// What both TensorRT plugins share: their namespace and version, logging through the logger
// TensorRT hands the library, attribute reading, and the tensor-format rule.
//
// Plugin methods are noexcept: they throw std::invalid_argument internally with a message naming
// the plugin, the layer, the tensor and the expectation, and catch it at the method boundary,
// where logError reports it to TensorRT's logger.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>

namespace warpres::plugin
{

constexpr char const* kPluginNamespace = "warpres";
constexpr char const* kPluginVersion = "1";

// Called from the library's setLoggerFinder entry point; the finder outlives the library.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

// To TensorRT's logger, or to stderr before TensorRT has handed the library one.
void logError(char const* message) noexcept;
void logWarning(char const* message) noexcept;

// "(1, 512, 64, 64)"; -1 for a dimension not known yet.
std::string dimsText(nvinfer1::Dims const& dims);

// The value of a scalar integer attribute. The ONNX parser and the Python API hand integers over
// as INT32 or INT64 depending on the path, so any integer field type is accepted.
int64_t integerField(nvinfer1::PluginField const& field, std::string const& owner);

// Linear FP32 or FP16, and every tensor of the node the same type as input 0.
bool isSupportedFormat(int32_t position, nvinfer1::DynamicPluginTensorDesc const* inOut);

// Two extents that are both known (not -1 at build time) and differ.
inline bool knownAndDifferent(int64_t a, int64_t b)
{
    return a >= 0 && b >= 0 && a != b;
}

// The extent as the int the kernel C ABI takes; throws when it does not fit.
int toKernelExtent(int64_t extent, std::string const& owner, char const* what);

} // namespace warpres::plugin
