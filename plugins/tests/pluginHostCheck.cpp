// warpres_plugin_host_check: loads libwarpres_plugins the way TensorRT's
// IPluginRegistry::loadLibrary does (dlopen, then the getCreators and setLoggerFinder entry
// points) and drives both plugins' IPluginV3 interfaces on the CPU, with no TensorRT runtime and
// no GPU: creators, attribute parsing, the serialise / re-create round trip, clone, output types
// and shapes, the format rule, configurePlugin, the workspace size and the runtime calls.
//
//     warpres_plugin_host_check path/to/libwarpres_plugins.so
//
// Prints one line per claim; exits 0 when every claim holds, 1 when any fails (listing them
// again at the end; a library that does not load is one), 2 on a usage error. Needs only the
// TensorRT headers and libdl: linking libnvinfer or the plugin library itself would hide what
// loadLibrary sees.
#include <NvInferRuntime.h>

#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

// ---------------------------------------------------------------------------------------------
// Reporting

class ClaimList
{
public:
    // Records one claim: prints it with its verdict, and remembers it when it does not hold.
    void check(bool holds, std::string const& claim)
    {
        std::printf("%s %s\n", holds ? "ok    " : "FAILED", claim.c_str());
        ++mNbChecked;
        if (!holds)
        {
            mFailed.push_back(claim);
        }
    }

    // The summary line, then every failed claim again so that they are not lost among the rest.
    int report() const
    {
        std::printf("\n%zu of %d claims failed\n", mFailed.size(), mNbChecked);
        for (std::string const& claim : mFailed)
        {
            std::printf("FAILED %s\n", claim.c_str());
        }
        return mFailed.empty() ? 0 : 1;
    }

private:
    int mNbChecked = 0;
    std::vector<std::string> mFailed;
};

// ---------------------------------------------------------------------------------------------
// Stand-ins for what TensorRT hands a plugin

// Keeps every message, so the checks can ask whether a rejected call explained itself.
class RecordingLogger : public ILogger
{
public:
    struct Message
    {
        Severity severity;
        std::string text;
    };

    void log(Severity severity, char const* text) noexcept override
    {
        mMessages.push_back({severity, text});
        std::printf("       [plugin log] %s\n", text);
    }

    size_t count() const
    {
        return mMessages.size();
    }

    // Exactly one message since `mark` (an earlier count()), an error that contains `text`: a
    // failed call must say which layer failed, and say it once.
    bool loggedOneErrorSince(size_t mark, std::string const& text) const
    {
        if (mMessages.size() != mark + 1)
        {
            return false;
        }
        Message const& message = mMessages.back();
        return message.severity == Severity::kERROR && message.text.find(text) != std::string::npos;
    }

private:
    std::vector<Message> mMessages;
};

class FixedLoggerFinder : public ILoggerFinder
{
public:
    explicit FixedLoggerFinder(ILogger& logger)
        : mLogger(logger)
    {
    }

    ILogger* findLogger() override
    {
        return &mLogger;
    }

private:
    ILogger& mLogger;
};

// IExprBuilder's expressions are opaque to plugins; these are plain constants, enough to check
// the arithmetic of getOutputShapes for known input shapes.
class ConstantValue : public apiv::VDimensionExpr
{
public:
    explicit ConstantValue(int64_t value)
        : mValue(value)
    {
    }

    bool isConstant() const override
    {
        return true;
    }

    int64_t getConstantValue() const override
    {
        return mValue;
    }

    bool isSizeTensor() const override
    {
        return false;
    }

private:
    int64_t mValue;
};

class ConstantExpr : public IDimensionExpr
{
public:
    explicit ConstantExpr(int64_t value)
        : mValue(value)
    {
        mImpl = &mValue;
    }

private:
    ConstantValue mValue;
};

int64_t floorDivide(int64_t a, int64_t b)
{
    int64_t const quotient = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? quotient - 1 : quotient;
}

class ConstantFolder : public apiv::VExprBuilder
{
public:
    IDimensionExpr const* constant(int64_t value) override
    {
        // A deque: the expressions handed out must stay where they are as more are added.
        mExpressions.emplace_back(value);
        return &mExpressions.back();
    }

    IDimensionExpr const* operation(
        DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
    {
        int64_t const a = first.getConstantValue();
        int64_t const b = second.getConstantValue();
        switch (op)
        {
        case DimensionOperation::kSUM: return constant(a + b);
        case DimensionOperation::kPROD: return constant(a * b);
        case DimensionOperation::kMAX: return constant(a > b ? a : b);
        case DimensionOperation::kMIN: return constant(a < b ? a : b);
        case DimensionOperation::kSUB: return constant(a - b);
        case DimensionOperation::kEQUAL: return constant(a == b ? 1 : 0);
        case DimensionOperation::kLESS: return constant(a < b ? 1 : 0);
        case DimensionOperation::kFLOOR_DIV: return constant(floorDivide(a, b));
        case DimensionOperation::kCEIL_DIV: return constant(-floorDivide(-a, b));
        }
        return constant(-1);
    }

    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        // Neither plugin has data-dependent output shapes.
        return nullptr;
    }

private:
    std::deque<ConstantExpr> mExpressions;
};

class ConstantExprBuilder : public IExprBuilder
{
public:
    ConstantExprBuilder()
    {
        mImpl = &mFolder;
    }

    DimsExprs shape(std::initializer_list<int64_t> extents)
    {
        DimsExprs result{};
        for (int64_t extent : extents)
        {
            result.d[result.nbDims++] = constant(extent);
        }
        return result;
    }

private:
    ConstantFolder mFolder;
};

// ---------------------------------------------------------------------------------------------
// Tensor descriptions

Dims dims(std::initializer_list<int64_t> extents)
{
    Dims result{};
    for (int64_t extent : extents)
    {
        result.d[result.nbDims++] = extent;
    }
    return result;
}

// A tensor whose build-time shape, and min / opt / max of its profile, are all `extents`.
DynamicPluginTensorDesc tensor(
    std::initializer_list<int64_t> extents, DataType type, TensorFormat format = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc result{};
    result.desc.dims = dims(extents);
    result.desc.type = type;
    result.desc.format = format;
    result.min = result.desc.dims;
    result.opt = result.desc.dims;
    result.max = result.desc.dims;
    return result;
}

bool supportsEveryPosition(IPluginV3OneBuild& build, DynamicPluginTensorDesc const* inOut, int32_t nbInputs)
{
    for (int32_t position = 0; position < nbInputs + 1; ++position)
    {
        if (!build.supportsFormatCombination(position, inOut, nbInputs, 1))
        {
            return false;
        }
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// The plugin's capability interfaces

IPluginV3OneCore* coreOf(IPluginV3& plugin)
{
    return static_cast<IPluginV3OneCore*>(plugin.getCapabilityInterface(PluginCapabilityType::kCORE));
}

IPluginV3OneBuild* buildOf(IPluginV3& plugin)
{
    return static_cast<IPluginV3OneBuild*>(plugin.getCapabilityInterface(PluginCapabilityType::kBUILD));
}

IPluginV3OneRuntime* runtimeOf(IPluginV3& plugin)
{
    return static_cast<IPluginV3OneRuntime*>(plugin.getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}

bool isNamed(char const* actual, char const* expected)
{
    return actual != nullptr && std::strcmp(actual, expected) == 0;
}

int32_t int32FieldValue(PluginFieldCollection const& fields, char const* name)
{
    for (int32_t i = 0; i < fields.nbFields; ++i)
    {
        PluginField const& field = fields.fields[i];
        if (isNamed(field.name, name) && field.type == PluginFieldType::kINT32 && field.length == 1)
        {
            return *static_cast<int32_t const*>(field.data);
        }
    }
    return -1;
}

// Holds the plugin objects a check creates; they are deleted before main returns.
using PluginPointer = std::unique_ptr<IPluginV3>;

// ---------------------------------------------------------------------------------------------
// ModulatedConv

// The layer name every ModulatedConv check uses, so that log messages can be traced to it.
constexpr char const* kConvLayer = "conv0_up";

// Attributes as the parser hands them over. Not copyable: `fields` points into the members.
struct ModulatedConvAttributeFields
{
    ModulatedConvAttributeFields() = default;
    ModulatedConvAttributeFields(ModulatedConvAttributeFields const&) = delete;
    ModulatedConvAttributeFields& operator=(ModulatedConvAttributeFields const&) = delete;

    int32_t demodulate = 1;
    int64_t up = 2; // INT64, as the Python API hands integers over
    int32_t padding = 1;
    std::vector<PluginField> fields{
        PluginField("demodulate", &demodulate, PluginFieldType::kINT32, 1),
        PluginField("up", &up, PluginFieldType::kINT64, 1),
        PluginField("padding", &padding, PluginFieldType::kINT32, 1),
    };

    PluginFieldCollection collection(int32_t nbFields = 3) const
    {
        return PluginFieldCollection{nbFields, fields.data()};
    }
};

PluginPointer checkModulatedConvAttributes(
    ClaimList& claims, IPluginCreatorV3One& creator, RecordingLogger& logger)
{
    ModulatedConvAttributeFields valid;
    PluginFieldCollection const validCollection = valid.collection();
    PluginPointer plugin(creator.createPlugin(kConvLayer, &validCollection, TensorRTPhase::kBUILD));
    claims.check(plugin != nullptr, "ModulatedConv accepts demodulate = 1 (INT32), up = 2 (INT64), padding = 1");

    int32_t const upThree = 3;
    ModulatedConvAttributeFields upIsThree;
    upIsThree.fields[1] = PluginField("up", &upThree, PluginFieldType::kINT32, 1);
    PluginFieldCollection const upIsThreeCollection = upIsThree.collection();
    size_t mark = logger.count();
    PluginPointer rejected(creator.createPlugin("conv_up3", &upIsThreeCollection, TensorRTPhase::kBUILD));
    claims.check(rejected == nullptr, "ModulatedConv rejects up = 3");
    claims.check(logger.loggedOneErrorSince(mark, "conv_up3"),
        "rejecting up = 3 logs one error naming the layer 'conv_up3'");

    ModulatedConvAttributeFields paddingMissing;
    PluginFieldCollection const withoutPadding = paddingMissing.collection(2);
    mark = logger.count();
    rejected.reset(creator.createPlugin("conv_missing", &withoutPadding, TensorRTPhase::kBUILD));
    claims.check(rejected == nullptr, "ModulatedConv rejects a missing attribute (padding)");
    claims.check(logger.loggedOneErrorSince(mark, "conv_missing"),
        "rejecting a missing attribute logs one error naming the layer 'conv_missing'");

    float const upAsFloat = 2.0F;
    ModulatedConvAttributeFields floatUp;
    floatUp.fields[1] = PluginField("up", &upAsFloat, PluginFieldType::kFLOAT32, 1);
    PluginFieldCollection const floatUpCollection = floatUp.collection();
    mark = logger.count();
    rejected.reset(creator.createPlugin("conv_float", &floatUpCollection, TensorRTPhase::kBUILD));
    claims.check(rejected == nullptr, "ModulatedConv rejects a FLOAT32 attribute (up = 2.0)");
    claims.check(logger.loggedOneErrorSince(mark, "conv_float"),
        "rejecting a FLOAT32 attribute logs one error naming the layer 'conv_float'");
    return plugin;
}

void checkModulatedConvInterfaces(ClaimList& claims, IPluginV3& plugin)
{
    IPluginV3OneCore* core = coreOf(plugin);
    IPluginV3OneBuild* build = buildOf(plugin);
    IPluginV3OneRuntime* runtime = runtimeOf(plugin);
    claims.check(core != nullptr && build != nullptr && runtime != nullptr,
        "ModulatedConv has the core, build and runtime capability interfaces");
    if (core == nullptr || build == nullptr || runtime == nullptr)
    {
        return;
    }
    claims.check(isNamed(core->getPluginName(), "ModulatedConv") && isNamed(core->getPluginVersion(), "1")
            && isNamed(core->getPluginNamespace(), "warpres"),
        "the ModulatedConv plugin reports ModulatedConv / 1 / warpres");
    claims.check(isNamed(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD"),
        "ModulatedConv's build interface is PLUGIN_V3ONE_BUILD");
    claims.check(isNamed(runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME"),
        "ModulatedConv's runtime interface is PLUGIN_V3ONE_RUNTIME");
    claims.check(build->getNbOutputs() == 1, "ModulatedConv has one output");
}

// An engine stores getFieldsToSerialize and re-creates the plugin from it in the runtime phase.
void checkModulatedConvSerialisation(ClaimList& claims, IPluginCreatorV3One& creator, IPluginV3& plugin)
{
    PluginFieldCollection const* serialised = runtimeOf(plugin)->getFieldsToSerialize();
    claims.check(serialised != nullptr && serialised->nbFields == 3, "ModulatedConv serialises three fields");
    if (serialised == nullptr)
    {
        return;
    }
    claims.check(int32FieldValue(*serialised, "demodulate") == 1 && int32FieldValue(*serialised, "up") == 2
            && int32FieldValue(*serialised, "padding") == 1,
        "ModulatedConv serialises demodulate = 1, up = 2, padding = 1 as INT32 (whatever type they came in)");

    PluginPointer restored(creator.createPlugin(kConvLayer, serialised, TensorRTPhase::kRUNTIME));
    claims.check(restored != nullptr, "ModulatedConv is re-created from its serialised fields");
    if (restored != nullptr)
    {
        PluginFieldCollection const* reserialised = runtimeOf(*restored)->getFieldsToSerialize();
        claims.check(reserialised != nullptr && reserialised->nbFields == 3
                && int32FieldValue(*reserialised, "demodulate") == 1 && int32FieldValue(*reserialised, "up") == 2
                && int32FieldValue(*reserialised, "padding") == 1,
            "the re-created ModulatedConv serialises the same fields");
    }

    PluginPointer cloned(plugin.clone());
    claims.check(cloned != nullptr, "ModulatedConv clones");
    if (cloned != nullptr)
    {
        // The fields point into the plugin's own attributes: a clone must not share them.
        PluginFieldCollection const* clonedFields = runtimeOf(*cloned)->getFieldsToSerialize();
        claims.check(clonedFields != nullptr && clonedFields->nbFields == 3
                && clonedFields->fields[1].data != serialised->fields[1].data
                && int32FieldValue(*clonedFields, "up") == 2,
            "a ModulatedConv clone serialises up = 2 from its own storage");
    }
}

void checkModulatedConvBuild(ClaimList& claims, IPluginV3OneBuild& build)
{
    DataType const halfInputs[3] = {DataType::kHALF, DataType::kHALF, DataType::kHALF};
    DataType outputType = DataType::kFLOAT;
    claims.check(build.getOutputDataTypes(&outputType, 1, halfInputs, 3) == 0 && outputType == DataType::kHALF,
        "ModulatedConv's output has the type of its input (FP16 in, FP16 out)");

    // x (3, 8, 5, 7), weight (16, 8, 3, 3), styles (3, 8), up = 2: out (3, 16, 10, 14).
    ConstantExprBuilder exprBuilder;
    DimsExprs const inputs[3]
        = {exprBuilder.shape({3, 8, 5, 7}), exprBuilder.shape({16, 8, 3, 3}), exprBuilder.shape({3, 8})};
    DimsExprs output{};
    int32_t const shapeStatus = build.getOutputShapes(inputs, 3, nullptr, 0, &output, 1, exprBuilder);
    claims.check(shapeStatus == 0 && output.nbDims == 4 && output.d[0]->getConstantValue() == 3
            && output.d[1]->getConstantValue() == 16 && output.d[2]->getConstantValue() == 10
            && output.d[3]->getConstantValue() == 14,
        "ModulatedConv's output shape is (B, O, 2H, 2W) = (3, 16, 10, 14) for up = 2");

    DynamicPluginTensorDesc inOut[4] = {tensor({3, 8, 5, 7}, DataType::kFLOAT), tensor({16, 8, 3, 3}, DataType::kFLOAT),
        tensor({3, 8}, DataType::kFLOAT), tensor({3, 16, 10, 14}, DataType::kFLOAT)};
    DynamicPluginTensorDesc const* outputs = inOut + 3;
    claims.check(supportsEveryPosition(build, inOut, 3), "ModulatedConv supports linear FP32 at every position");

    DynamicPluginTensorDesc mixed[4] = {inOut[0], inOut[1], inOut[2], inOut[3]};
    mixed[2].desc.type = DataType::kHALF;
    claims.check(!build.supportsFormatCombination(2, mixed, 3, 1),
        "ModulatedConv rejects FP16 styles next to an FP32 x (one type per node)");
    DynamicPluginTensorDesc int8[4] = {inOut[0], inOut[1], inOut[2], inOut[3]};
    int8[0].desc.type = DataType::kINT8;
    claims.check(!build.supportsFormatCombination(0, int8, 3, 1), "ModulatedConv rejects INT8");
    DynamicPluginTensorDesc vectorised[4] = {inOut[0], inOut[1], inOut[2], inOut[3]};
    vectorised[1].desc.format = TensorFormat::kCHW32;
    claims.check(!build.supportsFormatCombination(1, vectorised, 3, 1), "ModulatedConv rejects the CHW32 format");

    claims.check(build.configurePlugin(inOut, 3, outputs, 1) == 0, "ModulatedConv configures for matching shapes");
    DynamicPluginTensorDesc const dynamicBatch[3] = {tensor({-1, 8, 5, 7}, DataType::kFLOAT),
        tensor({16, 8, 3, 3}, DataType::kFLOAT), tensor({-1, 8}, DataType::kFLOAT)};
    claims.check(build.configurePlugin(dynamicBatch, 3, outputs, 1) == 0,
        "ModulatedConv configures with a batch still unknown (-1)");
    DynamicPluginTensorDesc const wrongInChannels[3] = {tensor({3, 8, 5, 7}, DataType::kFLOAT),
        tensor({16, 4, 3, 3}, DataType::kFLOAT), tensor({3, 8}, DataType::kFLOAT)};
    claims.check(build.configurePlugin(wrongInChannels, 3, outputs, 1) != 0,
        "ModulatedConv refuses a weight whose I differs from x's");
    DynamicPluginTensorDesc const kernelFive[3] = {tensor({3, 8, 5, 7}, DataType::kFLOAT),
        tensor({16, 8, 5, 5}, DataType::kFLOAT), tensor({3, 8}, DataType::kFLOAT)};
    claims.check(build.configurePlugin(kernelFive, 3, outputs, 1) != 0,
        "ModulatedConv refuses a 5x5 kernel with up = 2 and padding = 1");
    DynamicPluginTensorDesc const wrongStyleBatch[3] = {tensor({3, 8, 5, 7}, DataType::kFLOAT),
        tensor({16, 8, 3, 3}, DataType::kFLOAT), tensor({2, 8}, DataType::kFLOAT)};
    claims.check(build.configurePlugin(wrongStyleBatch, 3, outputs, 1) != 0,
        "ModulatedConv refuses styles whose batch differs from x's");

    // up = 2: 256 bytes of (B, O) coefficients, then the float32 (B, O, 2H+1, 2W+1) buffer.
    size_t const expectedWorkspace = 256 + 4 * 3 * 16 * (2 * 5 + 1) * (2 * 7 + 1);
    claims.check(build.getWorkspaceSize(inOut, 3, outputs, 1) == expectedWorkspace,
        "ModulatedConv's workspace for the largest shapes is 256 + 4 * 3 * 16 * 11 * 15 bytes");
}

// The library links cudart statically, and cudart finds the driver as libcuda.so.1.
bool cudaDriverIsPresent()
{
    void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (driver == nullptr)
    {
        return false;
    }
    dlclose(driver);
    return true;
}

void checkModulatedConvRuntime(ClaimList& claims, IPluginV3OneRuntime& runtime, RecordingLogger& logger)
{
    PluginTensorDesc const inOut[4] = {tensor({3, 8, 5, 7}, DataType::kFLOAT).desc,
        tensor({16, 8, 3, 3}, DataType::kFLOAT).desc, tensor({3, 8}, DataType::kFLOAT).desc,
        tensor({3, 16, 10, 14}, DataType::kFLOAT).desc};
    claims.check(runtime.onShapeChange(inOut, 3, inOut + 3, 1) == 0, "ModulatedConv accepts the runtime shapes");

    PluginPointer attached(runtime.attachToContext(nullptr));
    claims.check(attached != nullptr, "ModulatedConv attaches to an execution context (as a clone)");

    if (cudaDriverIsPresent())
    {
        // Host buffers would be handed to real kernels here; the GPU tests cover enqueue.
        std::printf("skip   enqueue without a CUDA driver: a driver is installed on this machine\n");
        return;
    }
    // Big enough for every tensor and the workspace of this call, so nothing is read out of
    // bounds if a launch got as far as touching memory.
    std::vector<char> hostBuffer(1 << 20);
    void const* inputs[3] = {hostBuffer.data(), hostBuffer.data(), hostBuffer.data()};
    void* outputs[1] = {hostBuffer.data()};
    size_t const mark = logger.count();
    int32_t const status = runtime.enqueue(inOut, inOut + 3, inputs, outputs, hostBuffer.data(), nullptr);
    claims.check(status != 0, "ModulatedConv's enqueue fails, without crashing, when there is no CUDA driver");
    claims.check(logger.loggedOneErrorSince(mark, kConvLayer),
        "the failed enqueue logs one error naming the layer 'conv0_up'");
}

void checkModulatedConv(ClaimList& claims, IPluginCreatorV3One& creator, RecordingLogger& logger)
{
    claims.check(isNamed(creator.getPluginName(), "ModulatedConv") && isNamed(creator.getPluginVersion(), "1")
            && isNamed(creator.getPluginNamespace(), "warpres"),
        "creator 0 is ModulatedConv, version 1, namespace warpres");
    PluginFieldCollection const* fieldNames = creator.getFieldNames();
    claims.check(fieldNames != nullptr && fieldNames->nbFields == 3,
        "the ModulatedConv creator lists three fields (demodulate, up, padding)");

    PluginPointer plugin = checkModulatedConvAttributes(claims, creator, logger);
    if (plugin == nullptr)
    {
        return;
    }
    checkModulatedConvInterfaces(claims, *plugin);
    if (buildOf(*plugin) == nullptr || runtimeOf(*plugin) == nullptr)
    {
        return;
    }
    checkModulatedConvSerialisation(claims, creator, *plugin);
    checkModulatedConvBuild(claims, *buildOf(*plugin));
    checkModulatedConvRuntime(claims, *runtimeOf(*plugin), logger);
}

// ---------------------------------------------------------------------------------------------
// FlowWarp

void checkFlowWarp(ClaimList& claims, IPluginCreatorV3One& creator)
{
    claims.check(isNamed(creator.getPluginName(), "FlowWarp") && isNamed(creator.getPluginVersion(), "1")
            && isNamed(creator.getPluginNamespace(), "warpres"),
        "creator 1 is FlowWarp, version 1, namespace warpres");
    PluginFieldCollection const* fieldNames = creator.getFieldNames();
    claims.check(fieldNames != nullptr && fieldNames->nbFields == 0, "the FlowWarp creator lists no fields");

    PluginPointer plugin(creator.createPlugin("warp_feat", nullptr, TensorRTPhase::kBUILD));
    claims.check(plugin != nullptr, "FlowWarp is created without attributes");
    if (plugin == nullptr || buildOf(*plugin) == nullptr || runtimeOf(*plugin) == nullptr)
    {
        return;
    }
    IPluginV3OneBuild& build = *buildOf(*plugin);
    IPluginV3OneRuntime& runtime = *runtimeOf(*plugin);

    // features (2, 64, 16, 16) and flow (2, 2, 16, 16) in FP16: out (2, 64, 16, 16).
    DynamicPluginTensorDesc const inOut[3] = {tensor({2, 64, 16, 16}, DataType::kHALF),
        tensor({2, 2, 16, 16}, DataType::kHALF), tensor({2, 64, 16, 16}, DataType::kHALF)};
    DynamicPluginTensorDesc const* outputs = inOut + 2;
    claims.check(supportsEveryPosition(build, inOut, 2), "FlowWarp supports linear FP16 at every position");
    claims.check(build.configurePlugin(inOut, 2, outputs, 1) == 0, "FlowWarp configures for matching shapes");
    DynamicPluginTensorDesc const threeChannelFlow[2]
        = {tensor({2, 64, 16, 16}, DataType::kHALF), tensor({2, 3, 16, 16}, DataType::kHALF)};
    claims.check(build.configurePlugin(threeChannelFlow, 2, outputs, 1) != 0,
        "FlowWarp refuses a flow with 3 channels instead of 2");
    claims.check(build.getWorkspaceSize(inOut, 2, outputs, 1) == 0, "FlowWarp needs no workspace");
    PluginFieldCollection const* serialised = runtime.getFieldsToSerialize();
    claims.check(serialised != nullptr && serialised->nbFields == 0, "FlowWarp serialises no fields");

    ConstantExprBuilder exprBuilder;
    DimsExprs const shapes[2] = {exprBuilder.shape({2, 3, 4, 5}), exprBuilder.shape({2, 2, 4, 5})};
    DimsExprs output{};
    int32_t const shapeStatus = build.getOutputShapes(shapes, 2, nullptr, 0, &output, 1, exprBuilder);
    claims.check(shapeStatus == 0 && output.nbDims == 4 && output.d[0]->getConstantValue() == 2
            && output.d[1]->getConstantValue() == 3 && output.d[2]->getConstantValue() == 4
            && output.d[3]->getConstantValue() == 5,
        "FlowWarp's output shape is the features' shape (2, 3, 4, 5)");
}

// ---------------------------------------------------------------------------------------------
// The library

using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
using SetLoggerFinder = void (*)(ILoggerFinder*);

int checkLibrary(char const* libraryPath)
{
    // RTLD_LOCAL, as loadLibrary: the library must not rely on symbols of anything loaded later.
    ClaimList claims;
    void* library = dlopen(libraryPath, RTLD_NOW | RTLD_LOCAL);
    char const* loadError = library == nullptr ? dlerror() : nullptr;
    claims.check(library != nullptr,
        std::string("the library loads with dlopen: ") + (loadError != nullptr ? loadError : libraryPath));
    if (library == nullptr)
    {
        return claims.report();
    }
    // Never dlclose'd: the creators and their plugins live in the library until the process exits.
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(library, "getCreators"));
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(library, "setLoggerFinder"));
    claims.check(getCreators != nullptr && setLoggerFinder != nullptr,
        "the library exports getCreators and setLoggerFinder");
    claims.check(dlsym(library, "warpres_modulated_conv_launch") == nullptr,
        "the kernel launchers stay local (warpresPlugins.map)");
    if (getCreators == nullptr || setLoggerFinder == nullptr)
    {
        return claims.report();
    }

    RecordingLogger logger;
    FixedLoggerFinder loggerFinder(logger);
    setLoggerFinder(&loggerFinder);

    int32_t nbCreators = 0;
    IPluginCreatorInterface* const* creators = getCreators(nbCreators);
    claims.check(creators != nullptr && nbCreators == 2, "getCreators returns two creators");
    if (creators == nullptr || nbCreators != 2)
    {
        return claims.report();
    }
    bool const bothV3One = isNamed(creators[0]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE")
        && isNamed(creators[1]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE");
    claims.check(bothV3One, "both creators are IPluginCreatorV3One (interface kind 'PLUGIN CREATOR_V3ONE')");
    if (!bothV3One)
    {
        return claims.report();
    }
    checkModulatedConv(claims, *static_cast<IPluginCreatorV3One*>(creators[0]), logger);
    checkFlowWarp(claims, *static_cast<IPluginCreatorV3One*>(creators[1]));
    return claims.report();
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 2)
    {
        std::fprintf(stderr, "usage: warpres_plugin_host_check path/to/libwarpres_plugins.so\n");
        return 2;
    }
    return checkLibrary(argv[1]);
}
