"""latentcodec: ultra-low-bitrate image and video compression in generative latent spaces."""

__version__ = "0.1.0"

from latentcodec.api import ImageCodec, VideoCodec, load, load_video  # noqa: E402
from latentcodec.runtime import retain_freed_memory  # noqa: E402

__all__ = ["ImageCodec", "VideoCodec", "load", "load_video", "retain_freed_memory", "__version__"]
