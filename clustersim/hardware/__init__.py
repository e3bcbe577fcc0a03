"""Hardware: device, link-technology and switch catalogs, every figure with its source.

Importable without numba or pandas.

>>> from clustersim.hardware import get_device, get_link
>>> get_device("b200").scale_up.technology, get_link("nvlink5").bw_Bps / 1e9
('nvlink5', 50.0)
"""

from clustersim.hardware.catalog import (DTYPES, LINK_CATEGORIES, DeviceSpec, HostLinkSpec,
                                         LinkTech, MemorySpec, ScaleUpSpec, SwitchSpec,
                                         device_presets, get_device, get_link, get_switch,
                                         link_presets, load_device_catalog, load_link_catalog,
                                         load_switch_catalog, switch_presets)

__all__ = [
    "DTYPES", "LINK_CATEGORIES",
    "DeviceSpec", "MemorySpec", "ScaleUpSpec", "HostLinkSpec", "LinkTech", "SwitchSpec",
    "get_device", "get_link", "get_switch", "device_presets", "link_presets", "switch_presets",
    "load_device_catalog", "load_link_catalog", "load_switch_catalog",
]
