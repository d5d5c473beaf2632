#include "modulatedConvPlugin/modulatedConvPlugin.h"

#include "common/kernelApi.h"
#include "common/pluginChecks.h"
#include "modulatedConvPlugin/modulatedConvKernel.cuh"

#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>
#include <utility>

using namespace nvinfer1;

namespace warpres::plugin
{
namespace
{

constexpr int32_t kNbInputs = 3; // x, weight, styles
constexpr int32_t kNbOutputs = 1;
constexpr char const* kDemodulateField = "demodulate";
constexpr char const* kUpField = "up";
constexpr char const* kPaddingField = "padding";

} // namespace

ModulatedConvPlugin::ModulatedConvPlugin(std::string layerName, ModulatedConvAttributes attributes)
    : mLayerName(std::move(layerName))
    , mAttributes(attributes)
{
}

std::string ModulatedConvPlugin::owner() const
{
    return std::string(kModulatedConvName) + " '" + mLayerName + "'";
}

void ModulatedConvPlugin::checkShapes(Dims const& x, Dims const& weight, Dims const& styles) const
{
    if (x.nbDims != 4)
    {
        throw std::invalid_argument(owner() + ": input 0 'x' must be 4-D (B, I, H, W), got " + dimsText(x));
    }
    if (weight.nbDims != 4)
    {
        throw std::invalid_argument(owner() + ": input 1 'weight' must be 4-D (O, I, k, k), got " + dimsText(weight));
    }
    if (styles.nbDims != 2)
    {
        throw std::invalid_argument(owner() + ": input 2 'styles' must be 2-D (B, I), got " + dimsText(styles));
    }
    if (knownAndDifferent(weight.d[1], x.d[1]))
    {
        throw std::invalid_argument(owner() + ": input 1 'weight' " + dimsText(weight)
            + " must be (O, I, k, k) with the I of input 0 'x' " + dimsText(x));
    }
    if (knownAndDifferent(weight.d[2], weight.d[3]))
    {
        throw std::invalid_argument(owner() + ": input 1 'weight' " + dimsText(weight) + " must have a square kernel");
    }
    if (knownAndDifferent(styles.d[0], x.d[0]) || knownAndDifferent(styles.d[1], x.d[1]))
    {
        throw std::invalid_argument(owner() + ": input 2 'styles' " + dimsText(styles)
            + " must be (B, I) of input 0 'x' " + dimsText(x));
    }
    if (weight.d[2] >= 0)
    {
        int const kernel = toKernelExtent(weight.d[2], owner(), "the kernel size of input 1 'weight'");
        if (char const* problem = modulatedConvKernelProblem(kernel, mAttributes.up, mAttributes.padding))
        {
            throw std::invalid_argument(owner() + ": kernel " + std::to_string(kernel) + " (input 1 'weight'), up = "
                + std::to_string(mAttributes.up) + ", padding = " + std::to_string(mAttributes.padding) + ": "
                + problem);
        }
    }
}

IPluginCapability* ModulatedConvPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* ModulatedConvPlugin::clone() noexcept
{
    try
    {
        return new ModulatedConvPlugin(mLayerName, mAttributes);
    }
    catch (std::exception const& error)
    {
        logError(error.what());
    }
    return nullptr;
}

char const* ModulatedConvPlugin::getPluginName() const noexcept
{
    return kModulatedConvName;
}

char const* ModulatedConvPlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* ModulatedConvPlugin::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

int32_t ModulatedConvPlugin::getNbOutputs() const noexcept
{
    return kNbOutputs;
}

int32_t ModulatedConvPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        return -1;
    }
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t ModulatedConvPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /* shapeInputs */, int32_t /* nbShapeInputs */, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    try
    {
        if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
        {
            throw std::invalid_argument(owner() + ": takes 3 inputs (x, weight, styles) and gives 1 output, got "
                + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
        }
        if (inputs[0].nbDims != 4 || inputs[1].nbDims != 4)
        {
            throw std::invalid_argument(owner() + ": inputs 0 'x' (B, I, H, W) and 1 'weight' (O, I, k, k) must be 4-D");
        }
        IDimensionExpr const* up = exprBuilder.constant(mAttributes.up);
        outputs[0].nbDims = 4;
        outputs[0].d[0] = inputs[0].d[0];
        outputs[0].d[1] = inputs[1].d[0];
        outputs[0].d[2] = exprBuilder.operation(DimensionOperation::kPROD, *inputs[0].d[2], *up);
        outputs[0].d[3] = exprBuilder.operation(DimensionOperation::kPROD, *inputs[0].d[3], *up);
        return 0;
    }
    catch (std::exception const& error)
    {
        logError(error.what());
    }
    return -1;
}

bool ModulatedConvPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    return nbInputs == kNbInputs && nbOutputs == kNbOutputs && isSupportedFormat(pos, inOut);
}

int32_t ModulatedConvPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /* out */,
    int32_t nbOutputs) noexcept
{
    try
    {
        if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
        {
            throw std::invalid_argument(owner() + ": takes 3 inputs (x, weight, styles) and gives 1 output");
        }
        checkShapes(in[0].desc.dims, in[1].desc.dims, in[2].desc.dims);
        return 0;
    }
    catch (std::exception const& error)
    {
        logError(error.what());
    }
    return -1;
}

size_t ModulatedConvPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /* outputs */, int32_t /* nbOutputs */) const noexcept
{
    try
    {
        if (nbInputs != kNbInputs)
        {
            return 0;
        }
        Dims const& x = inputs[0].max;
        int const batch = toKernelExtent(x.d[0], owner(), "the largest batch of input 0 'x'");
        int const outChannels = toKernelExtent(inputs[1].max.d[0], owner(), "O of input 1 'weight'");
        int const height = toKernelExtent(x.d[2], owner(), "the largest H of input 0 'x'");
        int const width = toKernelExtent(x.d[3], owner(), "the largest W of input 0 'x'");
        int const kernel = toKernelExtent(inputs[1].max.d[2], owner(), "k of input 1 'weight'");
        return warpres_modulated_conv_workspace_size(batch, outChannels, height, width, kernel, mAttributes.up);
    }
    catch (std::exception const& error)
    {
        logError(error.what());
    }
    return 0;
}

int32_t ModulatedConvPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /* out */, int32_t nbOutputs) noexcept
{
    try
    {
        if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
        {
            throw std::invalid_argument(owner() + ": takes 3 inputs (x, weight, styles) and gives 1 output");
        }
        checkShapes(in[0].dims, in[1].dims, in[2].dims);
        return 0;
    }
    catch (std::exception const& error)
    {
        logError(error.what());
    }
    return -1;
}

int32_t ModulatedConvPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /* outputDesc */,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        Dims const& x = inputDesc[0].dims;
        Dims const& weight = inputDesc[1].dims;
        int const batch = toKernelExtent(x.d[0], owner(), "B of input 0 'x'");
        int const inChannels = toKernelExtent(x.d[1], owner(), "I of input 0 'x'");
        int const outChannels = toKernelExtent(weight.d[0], owner(), "O of input 1 'weight'");
        int const height = toKernelExtent(x.d[2], owner(), "H of input 0 'x'");
        int const width = toKernelExtent(x.d[3], owner(), "W of input 0 'x'");
        int const kernel = toKernelExtent(weight.d[2], owner(), "k of input 1 'weight'");
        int const dtype = inputDesc[0].type == DataType::kHALF ? WARPRES_FLOAT16 : WARPRES_FLOAT32;
        // TensorRT sized the workspace by getWorkspaceSize for the largest shapes, so at least this.
        size_t const workspaceSize
            = warpres_modulated_conv_workspace_size(batch, outChannels, height, width, kernel, mAttributes.up);
        int const status = warpres_modulated_conv_launch(inputs[0], inputs[1], inputs[2], outputs[0], workspace,
            workspaceSize, batch, inChannels, outChannels, height, width, kernel, mAttributes.up, mAttributes.padding,
            mAttributes.demodulate, dtype, stream);
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

IPluginV3* ModulatedConvPlugin::attachToContext(IPluginResourceContext* /* context */) noexcept
{
    return clone();
}

PluginFieldCollection const* ModulatedConvPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        mSerializedFields = {
            PluginField(kDemodulateField, &mAttributes.demodulate, PluginFieldType::kINT32, 1),
            PluginField(kUpField, &mAttributes.up, PluginFieldType::kINT32, 1),
            PluginField(kPaddingField, &mAttributes.padding, PluginFieldType::kINT32, 1),
        };
        mSerializedCollection.nbFields = static_cast<int32_t>(mSerializedFields.size());
        mSerializedCollection.fields = mSerializedFields.data();
        return &mSerializedCollection;
    }
    catch (std::exception const& error)
    {
        logError(error.what());
    }
    return nullptr;
}

ModulatedConvPluginCreator::ModulatedConvPluginCreator() noexcept
    : mFieldNames{{PluginField(kDemodulateField, nullptr, PluginFieldType::kINT32, 1),
        PluginField(kUpField, nullptr, PluginFieldType::kINT32, 1),
        PluginField(kPaddingField, nullptr, PluginFieldType::kINT32, 1)}}
{
    mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldCollection.fields = mFieldNames.data();
}

char const* ModulatedConvPluginCreator::getPluginName() const noexcept
{
    return kModulatedConvName;
}

char const* ModulatedConvPluginCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* ModulatedConvPluginCreator::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

PluginFieldCollection const* ModulatedConvPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

IPluginV3* ModulatedConvPluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, TensorRTPhase /* phase */) noexcept
{
    try
    {
        std::string const layerName = name == nullptr ? "" : name;
        std::string const owner = std::string(kModulatedConvName) + " '" + layerName + "'";
        // Every attribute is required: the exporter writes all three, and a silent default
        // would turn a mistyped name into a different convolution.
        std::optional<int64_t> demodulate;
        std::optional<int64_t> up;
        std::optional<int64_t> padding;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            PluginField const& field = fc->fields[i];
            char const* fieldName = field.name == nullptr ? "" : field.name;
            if (std::strcmp(fieldName, kDemodulateField) == 0)
            {
                demodulate = integerField(field, owner);
            }
            else if (std::strcmp(fieldName, kUpField) == 0)
            {
                up = integerField(field, owner);
            }
            else if (std::strcmp(fieldName, kPaddingField) == 0)
            {
                padding = integerField(field, owner);
            }
            else
            {
                logWarning((owner + ": ignoring unknown attribute '" + fieldName + "'").c_str());
            }
        }
        if (!demodulate || !up || !padding)
        {
            throw std::invalid_argument(owner + ": needs the INT32 attributes demodulate, up and padding");
        }
        if (*demodulate != 0 && *demodulate != 1)
        {
            throw std::invalid_argument(
                owner + ": attribute demodulate must be 0 or 1, got " + std::to_string(*demodulate));
        }
        if (*up != 1 && *up != 2)
        {
            throw std::invalid_argument(owner + ": attribute up must be 1 or 2, got " + std::to_string(*up));
        }
        // Whether padding suits the kernel is checked once the weight's shape is known.
        if (*padding < 0 || *padding > std::numeric_limits<int32_t>::max())
        {
            throw std::invalid_argument(
                owner + ": attribute padding must be kernel // 2, got " + std::to_string(*padding));
        }
        ModulatedConvAttributes const attributes{
            static_cast<int32_t>(*demodulate), static_cast<int32_t>(*up), static_cast<int32_t>(*padding)};
        return new ModulatedConvPlugin(layerName, attributes);
    }
    catch (std::exception const& error)
    {
        logError(error.what());
    }
    return nullptr;
}

} // namespace warpres::plugin
