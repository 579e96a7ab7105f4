"""The cloud collector: MQTT in → decode → verify → store → receipt; alerts; JSON API."""

from .errors import CollectorError
from .verify import BatchResult, VerifyLimits, process_batch

__all__ = ["BatchResult", "CollectorError", "VerifyLimits", "process_batch"]
