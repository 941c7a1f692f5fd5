"""park-gateway: the Raspberry Pi side of park-edge."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("park-edge")
except _metadata.PackageNotFoundError:  # a checkout that was never installed
    __version__ = "0.0.0+checkout"
