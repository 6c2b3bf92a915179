"""sipr: an asynchronous SIP router with Python routing on a Rust core.

import sipr

app = sipr.App()

@app.route
async def route(req: sipr.Request) -> None:
    req.reply(200)
"""

from sipr._core import (
    URI,
    Address,
    CSeq,
    Headers,
    Request,
    Response,
    Serial,
    SiprError,
    Source,
    TransactionError,
    __version__,
)
from sipr.app import App
from sipr.auth import DigestAuth
from sipr.dispatcher import Dispatcher
from sipr.events import RegistrationEvent, ReloadEvent, SendEvent, TimeoutEvent
from sipr.http_routes import HttpRequest, HttpResponse
from sipr.prefix_routing import Gateway, PrefixRouter, Rule
from sipr.registrar import Contact, Registrar, by_q
from sipr.workqueue import QueueFull, WorkQueue

__all__ = [
    "URI",
    "Address",
    "App",
    "CSeq",
    "Contact",
    "DigestAuth",
    "Dispatcher",
    "Gateway",
    "Headers",
    "HttpRequest",
    "HttpResponse",
    "PrefixRouter",
    "QueueFull",
    "Registrar",
    "RegistrationEvent",
    "ReloadEvent",
    "Request",
    "Response",
    "Rule",
    "SendEvent",
    "Serial",
    "SiprError",
    "Source",
    "TimeoutEvent",
    "TransactionError",
    "WorkQueue",
    "__version__",
    "by_q",
]
