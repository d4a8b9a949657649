"""latentcodec: ultra-low-bitrate image and video compression in generative latent spaces."""

__version__ = "0.1.0"
