"""vidtray: a desktop helper for local AI video generation."""

__version__ = "0.1.0"
