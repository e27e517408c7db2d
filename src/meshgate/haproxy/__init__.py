"""The only code that talks to HAProxy: runtime API commands, replies, transport, supervisor.

`commands` and `replies` are pure (text in, text or values out); `transport` is the socket I/O;
`runtime.RuntimeClient` combines them into operations; `supervisor.HaproxySupervisor` runs the
HAProxy processes.
"""

from meshgate.haproxy.commands import HaproxyError, ServerAdminState, UnsafeRuntimeArgument
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
    ProcEntry,
    ProcInfo,
    RuntimeCommandFailed,
    ServerAdminFlags,
    ServerAlreadyExists,
    ServerHasConnections,
    ServerNotInMaintenance,
    ServerOpState,
    ServerState,
    StatRow,
    StatType,
    UnexpectedReply,
    UnknownCommand,
)
from meshgate.haproxy.runtime import RuntimeClient, ServerNotConfirmed
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
