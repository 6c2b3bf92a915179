"""sipr: an asynchronous SIP router with Python routing on a Rust core.

import sipr

app = sipr.App()

@app.route
async def route(req: sipr.Request) -> None:
    req.reply(200)
"""

# _alloc first: it sets the allocator's options before sipr._core loads.
from sipr import _alloc, limits  # noqa: F401
from sipr._core import (
    URI,
    Address,
    CSeq,
    DialogError,
    Headers,
    RelayReply,
    Request,
    Response,
    Serial,
    SiprError,
    Source,
    TransactionError,
    __version__,
)
from sipr.acc import Accounting, AccountingError
from sipr.acl import AddressGroups
from sipr.app import App
from sipr.auth import DigestAuth
from sipr.dispatcher import Dispatcher
from sipr.events import DialogEvent, RegistrationEvent, ReloadEvent, SendEvent, TimeoutEvent
from sipr.http_routes import HttpRequest, HttpResponse
from sipr.prefix_routing import Gateway, PrefixRouter, Rule
from sipr.registrar import Contact, Registrar, by_q
from sipr.security import AuthBans, Blocklist, FloodGuard, Security
from sipr.topology import TopologyHiding
from sipr.workqueue import QueueFull, WorkQueue

__all__ = [
    "URI",
    "Accounting",
    "AccountingError",
    "Address",
    "AddressGroups",
    "App",
    "AuthBans",
    "Blocklist",
    "CSeq",
    "Contact",
    "DialogError",
    "DialogEvent",
    "DigestAuth",
    "Dispatcher",
    "FloodGuard",
    "Gateway",
    "Headers",
    "HttpRequest",
    "HttpResponse",
    "PrefixRouter",
    "QueueFull",
    "Registrar",
    "RegistrationEvent",
    "RelayReply",
    "ReloadEvent",
    "Request",
    "Response",
    "Rule",
    "Security",
    "SendEvent",
    "Serial",
    "SiprError",
    "Source",
    "TimeoutEvent",
    "TopologyHiding",
    "TransactionError",
    "WorkQueue",
    "__version__",
    "by_q",
    "limits",
]
