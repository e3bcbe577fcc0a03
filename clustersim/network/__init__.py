"""TEMP until the layering branch lands."""


def __getattr__(name):
    if name == "build_cluster":
        from clustersim.topology import build_cluster
        return build_cluster
    raise AttributeError(name)
