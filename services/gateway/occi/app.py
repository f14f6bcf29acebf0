"""The OCCI 1.2 aiohttp application: middlewares for errors, version and authentication, and
the routes. Runs in the gateway's event loop beside the gRPC server."""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from services.common.errors import Unauthenticated, WnodesError
from services.gateway.occi import responses
from services.gateway.occi.auth import REALM, OcciAuthenticator
from services.gateway.occi.http_errors import PayloadTooLarge, VersionNotSupported, http_status
from services.gateway.occi.negotiation import ACCEPT_HEADER
from services.gateway.occi.routes import PRINCIPAL_KEY, OcciRoutes
from services.gateway.occi.service import OcciService

LOG = logging.getLogger(__name__)

SERVER = "wnodes-occi/0.1 OCCI/1.2"
MAX_BODY = 512 * 1024
REASON_HEADER = "X-Wnodes-Error-Reason"
_VERSION = re.compile(r"OCCI/(\d+)\.(\d+)")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes its status and a plain-text reason; never a traceback."""
    try:
        return await handler(request)
    except WnodesError as err:
        status = http_status(err)
        if status >= 500 and status != 501:
            LOG.warning("OCCI %s %s: %s", request.method, request.path, err.message)
        extra = {"WWW-Authenticate": f'Basic realm="{REALM}"'} if isinstance(err, Unauthenticated) else {}
        extra[REASON_HEADER] = err.reason  # the API's ErrorInfo reason, for clients that branch on it
        return responses.error(status, err.message, extra)
    except web.HTTPRequestEntityTooLarge:
        return responses.error(413, PayloadTooLarge(f"the body is larger than {MAX_BODY} bytes").message)
    except web.HTTPException as exc:
        return responses.error(exc.status, exc.reason)
    except UnicodeDecodeError:
        return responses.error(400, "the body is not UTF-8 text")
    except Exception:
        LOG.exception("OCCI %s %s failed", request.method, request.path)
        return responses.error(500, "internal error (see the gateway log)")


@web.middleware
async def occi_version(request: web.Request, handler: Handler) -> web.StreamResponse:
    """GFD.223: a client that asks for a newer OCCI than 1.2 gets 501."""
    found = _VERSION.search(request.headers.get("User-Agent", ""))
    if found and (int(found.group(1)), int(found.group(2))) > (1, 2):
        raise VersionNotSupported(f"this server speaks OCCI/1.2; the client asked for OCCI/{found.group(1)}.{found.group(2)}")
    return await handler(request)


def authentication(authenticator: OcciAuthenticator) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport is not None else None
        principal = await authenticator.authenticate(request.headers.get("Authorization"),
                                                     ssl_object if isinstance(ssl_object, ssl.SSLObject) else None)
        request[PRINCIPAL_KEY] = principal
        return await handler(request)

    return authenticate


async def _server_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER
    response.headers["Accept"] = ACCEPT_HEADER


def make_app(service: OcciService, authenticator: OcciAuthenticator) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[errors, occi_version, authentication(authenticator)])
    app.on_response_prepare.append(_server_headers)
    OcciRoutes(service).add_to(app)
    return app
