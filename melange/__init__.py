"""Melange: IP address management and DHCP address discovery."""

__version__ = "0.1.0"
