// The entry points of libwarpres_plugins as a dynamic (version-compatible style) plugin library:
// TensorRT's IPluginRegistry::loadLibrary (Python: get_plugin_registry().load_library) looks up
// exactly these two symbols, so the library needs no link to libnvinfer, and an engine can
// embed it (plugins_to_serialize). warpresPlugins.map keeps every other symbol local.
#include "common/pluginChecks.h"
#include "flowWarpPlugin/flowWarpPlugin.h"
#include "modulatedConvPlugin/modulatedConvPlugin.h"

extern "C" TENSORRTAPI nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static warpres::plugin::ModulatedConvPluginCreator modulatedConvCreator;
    static warpres::plugin::FlowWarpPluginCreator flowWarpCreator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&modulatedConvCreator, &flowWarpCreator};
    nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
}

extern "C" TENSORRTAPI void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    warpres::plugin::setLoggerFinder(finder);
}
