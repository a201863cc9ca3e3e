"""Faithful reference reimplementations of multimodal token compression methods.

    from reproductions import Tokens, get
    out = get("fastv", keep=64)(Tokens(features=x, attention=a))
"""

from .interface import Compression, Method, Tokens, resolve_keep
from .registry import get, methods, register

__all__ = ["Compression", "Method", "Tokens", "get", "methods", "register", "resolve_keep"]
