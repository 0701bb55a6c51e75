"""camingest: raw camera frames over shared memory in, H.264/H.265 over ZeroMQ out."""

__version__ = "0.1.0"
