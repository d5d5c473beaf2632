// TensorRT plugin ModulatedConv (namespace warpres, version 1): StyleGAN2's modulated
// convolution with a runtime style input. See README.md in this folder for the contract.
#pragma once

#include <NvInferRuntime.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace warpres::plugin
{

constexpr char const* kModulatedConvName = "ModulatedConv";

struct ModulatedConvAttributes
{
    int32_t demodulate; // 0 or 1
    int32_t up;         // 1 or 2
    int32_t padding;    // kernel // 2, checked against the weight's kernel once its shape is known
};

class ModulatedConvPlugin : public nvinfer1::IPluginV3,
                            public nvinfer1::IPluginV3OneCore,
                            public nvinfer1::IPluginV3OneBuild,
                            public nvinfer1::IPluginV3OneRuntime
{
public:
    ModulatedConvPlugin(std::string layerName, ModulatedConvAttributes attributes);

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    // "ModulatedConv 'layer'": how every message names this node.
    std::string owner() const;
    // Throws std::invalid_argument unless x (B, I, H, W), weight (O, I, k, k) and styles (B, I)
    // agree and k suits up and padding; dimensions still unknown (-1) are not checked.
    void checkShapes(nvinfer1::Dims const& x, nvinfer1::Dims const& weight, nvinfer1::Dims const& styles) const;

    std::string mLayerName;
    ModulatedConvAttributes mAttributes;
    // Point into mAttributes; rebuilt by every getFieldsToSerialize because clones copy them.
    std::vector<nvinfer1::PluginField> mSerializedFields;
    nvinfer1::PluginFieldCollection mSerializedCollection{};
};

class ModulatedConvPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    ModulatedConvPluginCreator() noexcept;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    // A fixed array, not a vector: the creators are built in getCreators, which must not throw.
    std::array<nvinfer1::PluginField, 3> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace warpres::plugin
