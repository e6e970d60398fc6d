"""upscayl-cloud: a self-hostable implementation of the Upscayl Cloud API."""

__version__ = "0.1.0"
