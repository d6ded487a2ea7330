"""The one exception a request handler raises to refuse a request."""

from __future__ import annotations


class HTTPError(Exception):
    """A request the service refuses: ``status`` and a one-line reason for the client.

    Parameters
    ----------
    status : int
        The HTTP status (4xx).
    message : str
        The reason, sent as ``{"error": message}``.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
