"""A PACS node as the user configures it: where it is, who we are to it, how to retrieve, timeouts."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

DEFAULT_CALLING_AE = "LIVERVIEW"
DEFAULT_CALLED_AE = "ANY-SCP"
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # 16 chars of the Default Character Repertoire, no '\'


class RetrieveMethod(str, Enum):
    """C-GET needs nothing on the PACS side; C-MOVE needs liverview registered there as a destination."""

    GET = "get"
    MOVE = "move"


@dataclass(frozen=True)
class Timeouts:
    """Seconds before each kind of wait gives up (pynetdicom's four timeouts)."""

    connection_s: float = 5.0
    acse_s: float = 10.0
    dimse_s: float = 30.0
    network_s: float = 60.0


@dataclass(frozen=True)
class TlsSettings:
    """Certificates for a TLS association: the CA that signed the PACS's certificate, and ours if the PACS
    asks for a client certificate."""

    ca_file: str
    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True)
class PacsNode:
    """One configured PACS. `called_ae` is the PACS's AE title, `calling_ae` liverview's."""

    name: str
    host: str
    port: int
    called_ae: str = DEFAULT_CALLED_AE
    calling_ae: str = DEFAULT_CALLING_AE
    retrieve_method: RetrieveMethod = RetrieveMethod.GET
    #: Port of liverview's own storage SCP for C-MOVE (the PACS must know calling_ae at this port).
    move_port: int = 11113
    tls: TlsSettings | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)

    def __post_init__(self) -> None:
        for label, title in (("PACS AE title", self.called_ae), ("liverview's AE title", self.calling_ae)):
            if not _AE_TITLE.match(title) or not title.strip():
                raise ValueError(f"{label} {title!r} is not valid: use 1 to 16 letters, digits or - _ . (no backslash)")
        for label, port in (("port", self.port), ("C-MOVE port", self.move_port)):
            if not 0 < port < 65536:
                raise ValueError(f"The {label} {port} is not a TCP port (1 to 65535)")

    @property
    def address(self) -> str:
        return f"{self.called_ae}@{self.host}:{self.port}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["retrieve_method"] = self.retrieve_method.value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PacsNode:
        tls = data.get("tls")
        return cls(name=str(data["name"]), host=str(data["host"]), port=int(data["port"]),
                   called_ae=str(data.get("called_ae", DEFAULT_CALLED_AE)),
                   calling_ae=str(data.get("calling_ae", DEFAULT_CALLING_AE)),
                   retrieve_method=RetrieveMethod(data.get("retrieve_method", "get")),
                   move_port=int(data.get("move_port", 11113)),
                   tls=TlsSettings(**tls) if tls else None,
                   timeouts=Timeouts(**data.get("timeouts", {})))

    def with_changes(self, **changes) -> PacsNode:
        return replace(self, **changes)


def parse_pacs_address(text: str, calling_ae: str = DEFAULT_CALLING_AE) -> PacsNode:
    """A node from ``HOST:PORT[:CALLED_AET]`` (the command line's ``--pacs``)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT or HOST:PORT:AE_TITLE (for example pacs.hospital:104:PACS)")
    called = parts[2] if len(parts) == 3 else DEFAULT_CALLED_AE
    return PacsNode(name=parts[0], host=parts[0], port=int(parts[1]), called_ae=called, calling_ae=calling_ae)
