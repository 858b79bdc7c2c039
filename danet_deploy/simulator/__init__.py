"""Simulators: the float reference interpreter of NIR graphs (layer-synchronous)."""
