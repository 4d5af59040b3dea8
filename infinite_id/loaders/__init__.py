"""Loaders for weights made outside this project (IP-Adapter-family face adapters)."""

from .ip_adapter import (
    IPAdapter,
    IPAdapterIdentityEncoder,
    IPAdapterInfo,
    detect_ip_adapter_kind,
    is_ip_adapter_file,
    load_ip_adapter,
    read_ip_adapter_file,
)

__all__ = [
    "IPAdapter",
    "IPAdapterIdentityEncoder",
    "IPAdapterInfo",
    "detect_ip_adapter_kind",
    "is_ip_adapter_file",
    "load_ip_adapter",
    "read_ip_adapter_file",
]
