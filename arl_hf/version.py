"""The package version (a leaf module, read by ``arl_hf.__version__`` and :mod:`arl_hf.env`)."""

__version__ = "0.1.0"
