"""Hardware: device, link-technology and switch catalogs, every figure with its source.

Importable without numba or pandas.

>>> from clustersim.hardware import get_device, get_link
>>> get_device("b200").scale_up.technology, get_link("nvlink5").bw_Bps / 1e9
('nvlink5', 50.0)
"""

from clustersim.hardware.catalog import (device_presets, get_device, get_link, get_switch,
                                         host_link_bw_Bps, link_presets, load_device_catalog,
                                         load_link_catalog, load_switch_catalog,
                                         override_device, scale_up_bw_Bps, switch_presets)
from clustersim.hardware.specs import (DTYPES, LINK_CATEGORIES, DeviceSpec, HostLinkSpec,
                                       LinkTech, MemorySpec, ScaleUpSpec, SwitchSpec)

__all__ = [
    "DTYPES", "LINK_CATEGORIES",
    "DeviceSpec", "MemorySpec", "ScaleUpSpec", "HostLinkSpec", "LinkTech", "SwitchSpec",
    "get_device", "get_link", "get_switch", "device_presets", "link_presets", "switch_presets",
    "load_device_catalog", "load_link_catalog", "load_switch_catalog",
    "override_device", "scale_up_bw_Bps", "host_link_bw_Bps",
]
