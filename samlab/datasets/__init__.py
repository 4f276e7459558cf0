"""Dataset readers for samlab experiments."""

from .digits import DigitsData, digits_loaders, load_digits

__all__ = ["DigitsData", "digits_loaders", "load_digits"]
