"""PicGate: an OpenAI-compatible gateway that turns upstream base64 images into short URLs."""

__version__ = "0.1.0"
