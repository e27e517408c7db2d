"""The only code that talks to HAProxy: runtime API commands, replies, transport, supervisor.

`commands` and the reply parsers are pure (text in, text or values out): `replies` tells errors
from success and reads map and info replies; `stat_csv`, `server_states` and `processes` read
`show stat`, `show servers state` and the master's `show proc`. `transport` is the socket I/O;
`runtime.RuntimeClient` combines them into operations; `supervisor.HaproxySupervisor` runs the
HAProxy processes.
"""

from meshgate.haproxy.commands import HaproxyError, ServerAdminState, UnsafeRuntimeArgument
from meshgate.haproxy.processes import ProcEntry, ProcInfo
from meshgate.haproxy.replies import (
    CommandKind,
    MapEntryNotFound,
    MapInfo,
    MapVersionInvalid,
    NoReply,
    NoSuchBackend,
    NoSuchMap,
    NoSuchProcess,
    NoSuchServer,
    PermissionDenied,
    RuntimeCommandFailed,
    ServerAlreadyExists,
    ServerHasConnections,
    ServerNotInMaintenance,
    UnexpectedReply,
    UnknownCommand,
)
from meshgate.haproxy.runtime import RuntimeClient, ServerNotConfirmed
from meshgate.haproxy.server_states import ServerAdminFlags, ServerOpState, ServerState
from meshgate.haproxy.stat_csv import StatRow, StatType
from meshgate.haproxy.supervisor import (
    CheckResult,
    ConfigRejected,
    HaproxyStartFailed,
    HaproxySupervisor,
    NotRunning,
    ReloadFailed,
    ReloadResult,
)
from meshgate.haproxy.transport import RequestTooLarge, RuntimeUnavailable

__all__ = [
    "CheckResult",
    "CommandKind",
    "ConfigRejected",
    "HaproxyError",
    "HaproxyStartFailed",
    "HaproxySupervisor",
    "MapEntryNotFound",
    "MapInfo",
    "MapVersionInvalid",
    "NoReply",
    "NoSuchBackend",
    "NoSuchMap",
    "NoSuchProcess",
    "NoSuchServer",
    "NotRunning",
    "PermissionDenied",
    "ProcEntry",
    "ProcInfo",
    "ReloadFailed",
    "ReloadResult",
    "RequestTooLarge",
    "RuntimeClient",
    "RuntimeCommandFailed",
    "RuntimeUnavailable",
    "ServerAdminFlags",
    "ServerAdminState",
    "ServerAlreadyExists",
    "ServerHasConnections",
    "ServerNotConfirmed",
    "ServerNotInMaintenance",
    "ServerOpState",
    "ServerState",
    "StatRow",
    "StatType",
    "UnexpectedReply",
    "UnknownCommand",
    "UnsafeRuntimeArgument",
]
