"""Layers of a model as units: the layer map (named parameter groups) and layer resets."""

from espnet_ext.layers.layer_map import (
    GRANULARITIES,
    LayerGroup,
    LayerMap,
    LayerMapError,
    build_layer_map,
)
from espnet_ext.layers.reset import (
    ArchitectureMismatchError,
    InitialWeightSampler,
    WeightSwap,
    check_compatible,
    group_values,
    load_state_dict_file,
    reset_to_checkpoint,
    rerandomize,
)

__all__ = [
    "GRANULARITIES",
    "LayerGroup",
    "LayerMap",
    "LayerMapError",
    "build_layer_map",
    "ArchitectureMismatchError",
    "InitialWeightSampler",
    "WeightSwap",
    "check_compatible",
    "group_values",
    "load_state_dict_file",
    "reset_to_checkpoint",
    "rerandomize",
]
