"""The API proxy's rules, apart from HTTP plumbing: which headers cross, where a request goes.

Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the message, so they are
dropped both ways, together with any header the Connection header names. `Host` is the
tenant's, set by the client library. The caller is named in X-Forwarded-For (appended to what
an earlier proxy said) and the request id travels on, so the tenant's log line and ours match.
"""

from __future__ import annotations

from collections.abc import Iterable

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade",
})
# Set again on our side: the length by the client library for the body it sends, the rest by
# our server and middleware for the answer it sends.
_REQUEST_REPLACED = frozenset({"host", "content-length", "x-request-id", "x-forwarded-for",
                               "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix"})
_RESPONSE_REPLACED = frozenset({"date", "server", "x-request-id"})

Headers = list[tuple[str, str]]


def _connection_named(headers: Iterable[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for key, value in headers:
        if key.lower() == "connection":
            named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return named


def request_headers_for_tenant(headers: Headers, *, client_ip: str | None, request_id: str | None,
                               scheme: str, host: str | None, prefix: str) -> Headers:
    """The caller's headers as sent on to the tenant (Authorization included: the tenant's token
    is the credential)."""
    drop = HOP_BY_HOP | _REQUEST_REPLACED | _connection_named(headers)
    forwarded = [(k, v) for k, v in headers if k.lower() not in drop]
    earlier = [v for k, v in headers if k.lower() == "x-forwarded-for"]
    chain = ", ".join([*earlier, client_ip] if client_ip else earlier)
    if chain:
        forwarded.append(("x-forwarded-for", chain))
    forwarded.append(("x-forwarded-proto", scheme))
    if host:
        forwarded.append(("x-forwarded-host", host))
    forwarded.append(("x-forwarded-prefix", prefix))
    if not any(k.lower() == "accept-encoding" for k, _ in forwarded):
        # The answer's bytes are passed on as they come: without this, the client library's
        # default would ask the tenant for a compression the caller never asked for.
        forwarded.append(("accept-encoding", "identity"))
    if request_id:
        forwarded.append(("x-request-id", request_id))
    return forwarded


def response_headers_for_caller(headers: Headers) -> Headers:
    drop = HOP_BY_HOP | _RESPONSE_REPLACED | _connection_named(headers)
    return [(k, v) for k, v in headers if k.lower() not in drop]


def tenant_url(api_url: str, path: str, query: str) -> str:
    """`{api_url}/{path}?{query}`; the query string is passed on byte for byte."""
    url = f"{api_url.rstrip('/')}/{path.lstrip('/')}"
    return f"{url}?{query}" if query else url
