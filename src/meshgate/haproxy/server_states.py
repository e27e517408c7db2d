"""Parsing `show servers state`: each server's address, weight, operational and
administrative state. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from meshgate.haproxy.replies import UnexpectedReply


class ServerOpState(IntEnum):
    STOPPED = 0
    STARTING = 1
    RUNNING = 2
    STOPPING = 3


class ServerAdminFlags(IntFlag):
    FMAINT = 0x01  # forced into maintenance (set server state maint, or a new dynamic server)
    IMAINT = 0x02  # inherited from a tracked server
    CMAINT = 0x04  # `disabled` in the configuration
    FDRAIN = 0x08  # forced into drain
    IDRAIN = 0x10  # inherited drain
    RMAINT = 0x20  # address resolution failed
    HMAINT = 0x40  # FQDN set from the socket

    @property
    def in_maintenance(self) -> bool:
        maint = self.FMAINT | self.IMAINT | self.CMAINT | self.RMAINT
        return bool(self & maint)

    @property
    def draining(self) -> bool:
        return bool(self & (self.FDRAIN | self.IDRAIN))


@dataclass(frozen=True)
class ServerState:
    """One server line of `show servers state` (format version 1)."""

    backend_id: int
    backend: str
    server_id: int
    name: str
    addr: str
    port: int
    op_state: ServerOpState
    admin_state: ServerAdminFlags
    weight: int  # user-visible (current) weight
    initial_weight: int
    seconds_since_change: int
    check_status: int
    check_result: int
    check_health: int
    check_state: int
    agent_state: int
    fqdn: str | None

    @property
    def status(self) -> str:
        """UP, DOWN or MAINT, as the product reports instance health."""
        if self.admin_state.in_maintenance:
            return "MAINT"
        if self.op_state in (ServerOpState.RUNNING, ServerOpState.STARTING):
            return "UP"
        return "DOWN"


def parse_servers_state(reply: str) -> list[ServerState]:
    lines = [line for line in reply.splitlines() if line.strip()]
    if not lines:
        raise UnexpectedReply("empty 'show servers state' reply")
    if lines[0].strip() != "1":
        raise UnexpectedReply(f"unknown 'show servers state' format version {lines[0]!r}")
    header = next((line for line in lines[1:] if line.startswith("#")), None)
    if header is None:
        raise UnexpectedReply("'show servers state' reply has no header line")
    names = header.lstrip("#").split()
    servers: list[ServerState] = []
    for line in lines[1:]:
        if line.startswith("#"):
            continue
        values = dict(zip(names, line.split(), strict=False))
        try:
            servers.append(_server_state(values))
        except (KeyError, ValueError) as error:
            raise UnexpectedReply(f"bad 'show servers state' line {line!r}: {error}") from None
    return servers


def _server_state(values: dict[str, str]) -> ServerState:
    fqdn = values.get("srv_fqdn", "-")
    return ServerState(
        backend_id=int(values["be_id"]),
        backend=values["be_name"],
        server_id=int(values["srv_id"]),
        name=values["srv_name"],
        addr=values["srv_addr"],
        port=int(values["srv_port"]),
        op_state=ServerOpState(int(values["srv_op_state"])),
        admin_state=ServerAdminFlags(int(values["srv_admin_state"])),
        weight=int(values["srv_uweight"]),
        initial_weight=int(values["srv_iweight"]),
        seconds_since_change=int(values["srv_time_since_last_change"]),
        check_status=int(values["srv_check_status"]),
        check_result=int(values["srv_check_result"]),
        check_health=int(values["srv_check_health"]),
        check_state=int(values["srv_check_state"]),
        agent_state=int(values["srv_agent_state"]),
        fqdn=None if fqdn == "-" else fqdn,
    )
