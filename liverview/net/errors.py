"""What can go wrong talking to a PACS, each as an exception whose message a radiologist can act on.

The messages name the node and what to do; they never carry patient data (a PACS's error comment
may quote the query, so it is logged at debug level only, never put in a message).
"""
from __future__ import annotations


class PacsError(Exception):
    """Any failure of a DICOM network operation; ``str(error)`` is the sentence to show."""


class PacsUnreachable(PacsError):
    """No TCP connection: wrong host or port, PACS down, or a firewall in between."""


class CalledAERejected(PacsError):
    """The PACS refused the association because it does not answer to the called AE title."""


class CallingAEUnknown(PacsError):
    """The PACS does not know liverview's (calling) AE title, or refuses it this operation."""


class AssociationRejected(PacsError):
    """The PACS refused the association for another reason (busy, no common SOP class, …)."""


class MoveDestinationUnknown(PacsError):
    """C-MOVE: the PACS does not know where to send the images (0xA801, or Orthanc's 0xC000)."""


class PacsTimeout(PacsError):
    """The PACS stopped answering for longer than the configured timeout; `received`: the images of the
    series that had arrived by then (not kept)."""

    def __init__(self, message: str, received: int = 0) -> None:
        super().__init__(message)
        self.received = received


class PartialRetrieve(PacsError):
    """Some images of a series did not arrive; nothing of the series was published to the cache."""

    def __init__(self, message: str, received: int, expected: int) -> None:
        super().__init__(message)
        self.received = received
        self.expected = expected


class PacsRefused(PacsError):
    """The PACS answered an operation with a failure status not covered above."""


class CacheError(PacsError):
    """The local retrieve cache cannot be written (disk full, permissions)."""
