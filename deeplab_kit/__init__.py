"""deeplab-kit: DeepLabv3 and atrous convolution, to learn from and to replicate with."""

__version__ = "0.1.0"
