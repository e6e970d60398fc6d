"""The upscaling engine: real super-resolution networks (ncnn) over tiles.

Knows nothing of HTTP or databases, so the service's workers and the local
``upscayl-cloud upscale`` command share it unchanged.
"""
