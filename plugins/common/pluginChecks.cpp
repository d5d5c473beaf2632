#include "common/pluginChecks.h"

#include <atomic>
#include <cstdio>
#include <limits>
#include <stdexcept>

namespace warpres::plugin
{
namespace
{

std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

void log(nvinfer1::ILogger::Severity severity, char const* message) noexcept
{
    nvinfer1::ILogger* logger = nullptr;
    if (nvinfer1::ILoggerFinder* finder = gLoggerFinder.load())
    {
        try
        {
            logger = finder->findLogger();
        }
        catch (...)
        {
            logger = nullptr;
        }
    }
    if (logger != nullptr)
    {
        logger->log(severity, message);
        return;
    }
    std::fprintf(stderr, "warpres_plugins: %s\n", message);
}

} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

void logError(char const* message) noexcept
{
    log(nvinfer1::ILogger::Severity::kERROR, message);
}

void logWarning(char const* message) noexcept
{
    log(nvinfer1::ILogger::Severity::kWARNING, message);
}

std::string dimsText(nvinfer1::Dims const& dims)
{
    std::string text = "(";
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        text += (i == 0 ? "" : ", ") + std::to_string(dims.d[i]);
    }
    return text + ")";
}

int64_t integerField(nvinfer1::PluginField const& field, std::string const& owner)
{
    std::string const name = field.name == nullptr ? "?" : field.name;
    if (field.data == nullptr || field.length != 1)
    {
        throw std::invalid_argument(owner + ": attribute '" + name + "' must be one integer, got "
            + std::to_string(field.length) + " values");
    }
    switch (field.type)
    {
    case nvinfer1::PluginFieldType::kINT8: return *static_cast<int8_t const*>(field.data);
    case nvinfer1::PluginFieldType::kINT16: return *static_cast<int16_t const*>(field.data);
    case nvinfer1::PluginFieldType::kINT32: return *static_cast<int32_t const*>(field.data);
    case nvinfer1::PluginFieldType::kINT64: return *static_cast<int64_t const*>(field.data);
    default:
        throw std::invalid_argument(owner + ": attribute '" + name + "' must be an integer (INT32), got field type "
            + std::to_string(static_cast<int32_t>(field.type)));
    }
}

bool isSupportedFormat(int32_t position, nvinfer1::DynamicPluginTensorDesc const* inOut)
{
    nvinfer1::PluginTensorDesc const& desc = inOut[position].desc;
    bool const floatType = desc.type == nvinfer1::DataType::kFLOAT || desc.type == nvinfer1::DataType::kHALF;
    return floatType && desc.format == nvinfer1::TensorFormat::kLINEAR && desc.type == inOut[0].desc.type;
}

int toKernelExtent(int64_t extent, std::string const& owner, char const* what)
{
    if (extent < 1 || extent > std::numeric_limits<int>::max())
    {
        throw std::invalid_argument(owner + ": " + what + " = " + std::to_string(extent)
            + " is outside 1.." + std::to_string(std::numeric_limits<int>::max()));
    }
    return static_cast<int>(extent);
}

} // namespace warpres::plugin
