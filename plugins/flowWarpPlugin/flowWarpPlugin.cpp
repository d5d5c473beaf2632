#include "flowWarpPlugin/flowWarpPlugin.h"

#include "common/kernelApi.h"
#include "common/pluginChecks.h"

#include <stdexcept>
#include <utility>

using namespace nvinfer1;

namespace warpres::plugin
{
namespace
{

constexpr int32_t kNbInputs = 2; // features, flow
constexpr int32_t kNbOutputs = 1;

} // namespace

FlowWarpPlugin::FlowWarpPlugin(std::string layerName)
    : mLayerName(std::move(layerName))
{
}

std::string FlowWarpPlugin::owner() const
{
    return std::string(kFlowWarpName) + " '" + mLayerName + "'";
}

void FlowWarpPlugin::checkShapes(Dims const& features, Dims const& flow) const
{
    if (features.nbDims != 4)
    {
        throw std::invalid_argument(
            owner() + ": input 0 'features' must be 4-D (B, C, H, W), got " + dimsText(features));
    }
    if (flow.nbDims != 4 || knownAndDifferent(flow.d[1], 2) || knownAndDifferent(flow.d[0], features.d[0])
        || knownAndDifferent(flow.d[2], features.d[2]) || knownAndDifferent(flow.d[3], features.d[3]))
    {
        throw std::invalid_argument(owner() + ": input 1 'flow' " + dimsText(flow)
            + " must be (B, 2, H, W) for input 0 'features' " + dimsText(features));
    }
}

IPluginCapability* FlowWarpPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* FlowWarpPlugin::clone() noexcept
{
    try
    {
        return new FlowWarpPlugin(mLayerName);
    }
    catch (std::exception const& error)
    {
        logError(error.what());
    }
    return nullptr;
}

char const* FlowWarpPlugin::getPluginName() const noexcept
{
    return kFlowWarpName;
}

char const* FlowWarpPlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* FlowWarpPlugin::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

int32_t FlowWarpPlugin::getNbOutputs() const noexcept
{
    return kNbOutputs;
}

int32_t FlowWarpPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        return -1;
    }
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t FlowWarpPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /* shapeInputs */,
    int32_t /* nbShapeInputs */, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /* exprBuilder */) noexcept
{
    try
    {
        if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
        {
            throw std::invalid_argument(owner() + ": takes 2 inputs (features, flow) and gives 1 output");
        }
        outputs[0] = inputs[0];
        return 0;
    }
    catch (std::exception const& error)
    {
        logError(error.what());
    }
    return -1;
}

bool FlowWarpPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    return nbInputs == kNbInputs && nbOutputs == kNbOutputs && isSupportedFormat(pos, inOut);
}

int32_t FlowWarpPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /* out */,
    int32_t nbOutputs) noexcept
{
    try
    {
        if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
        {
            throw std::invalid_argument(owner() + ": takes 2 inputs (features, flow) and gives 1 output");
        }
        checkShapes(in[0].desc.dims, in[1].desc.dims);
        return 0;
    }
    catch (std::exception const& error)
    {
        logError(error.what());
    }
    return -1;
}

int32_t FlowWarpPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept
{
    try
    {
        if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
        {
            throw std::invalid_argument(owner() + ": takes 2 inputs (features, flow) and gives 1 output");
        }
        checkShapes(in[0].dims, in[1].dims);
        return 0;
    }
    catch (std::exception const& error)
    {
        logError(error.what());
    }
    return -1;
}

int32_t FlowWarpPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /* outputDesc */,
    void const* const* inputs, void* const* outputs, void* /* workspace */, cudaStream_t stream) noexcept
{
    try
    {
        Dims const& features = inputDesc[0].dims;
        int const batch = toKernelExtent(features.d[0], owner(), "B of input 0 'features'");
        int const channels = toKernelExtent(features.d[1], owner(), "C of input 0 'features'");
        int const height = toKernelExtent(features.d[2], owner(), "H of input 0 'features'");
        int const width = toKernelExtent(features.d[3], owner(), "W of input 0 'features'");
        int const dtype = inputDesc[0].type == DataType::kHALF ? WARPRES_FLOAT16 : WARPRES_FLOAT32;
        int const status = warpres_flow_warp_launch(
            inputs[0], inputs[1], outputs[0], batch, channels, height, width, dtype, stream);
        if (status == WARPRES_OK)
        {
            return 0;
        }
        std::string const reason = status > 0 ? cudaGetErrorName(static_cast<cudaError_t>(status))
                                              : "unsupported arguments (status " + std::to_string(status) + ")";
        logError((owner() + ": kernel launch failed: " + reason).c_str());
    }
    catch (std::exception const& error)
    {
        logError(error.what());
    }
    return -1;
}

IPluginV3* FlowWarpPlugin::attachToContext(IPluginResourceContext* /* context */) noexcept
{
    return clone();
}

PluginFieldCollection const* FlowWarpPlugin::getFieldsToSerialize() noexcept
{
    return &mNoFields;
}

char const* FlowWarpPluginCreator::getPluginName() const noexcept
{
    return kFlowWarpName;
}

char const* FlowWarpPluginCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* FlowWarpPluginCreator::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

PluginFieldCollection const* FlowWarpPluginCreator::getFieldNames() noexcept
{
    return &mNoFields;
}

IPluginV3* FlowWarpPluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, TensorRTPhase /* phase */) noexcept
{
    try
    {
        std::string const layerName = name == nullptr ? "" : name;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            char const* fieldName = fc->fields[i].name == nullptr ? "" : fc->fields[i].name;
            logWarning((std::string(kFlowWarpName) + " '" + layerName + "': ignoring unknown attribute '" + fieldName
                + "' (FlowWarp has none)")
                           .c_str());
        }
        return new FlowWarpPlugin(layerName);
    }
    catch (std::exception const& error)
    {
        logError(error.what());
    }
    return nullptr;
}

} // namespace warpres::plugin
