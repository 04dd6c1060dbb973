"""The HTTP API client behind `melange --url`: an operation in, its result out.

Standard library only (http.client, ssl, json): like the socket client, this
path imports neither SQLAlchemy nor rich, so a remote command costs a Python
start and one round trip. Routes come from the declaration
(melange.operations `Http`), so the client and melanged's HTTP server cannot
disagree about a path or a method.
Results are what the operation returns as JSON; paged lists are walked to the
end, so the CLI prints exactly what direct mode prints. A refusal arrives as
problem+json carrying the contract's code and exit code, and is raised as the
same MelangeError the core would have raised.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from melange import __version__
from melange.errors import (
    BY_CODE,
    InvalidInput,
    MelangeError,
    PermissionDenied,
    StoreUnavailable,
    Unauthenticated,
)
from melange.operations import OPERATIONS, Http

Connection = http.client.HTTPConnection
Response = http.client.HTTPResponse
BadResponse = http.client.HTTPException  # not HTTP, or an answer that ended mid-way
Closed = http.client.RemoteDisconnected  # the server closed before its answer began

TIMEOUT = 300.0  # a long import or export may take minutes; the socket client waits as long
UPLOAD_TIMEOUT = 3600.0  # a streamed import's answer: a million addresses take minutes
CONNECT_TIMEOUT = 10.0  # a host that drops packets is exit 6 in seconds, not minutes
PAGE_SIZE = 1000  # the largest page the API serves: fewest round trips for a long list
ERROR_BODY_LIMIT = 64 * 1024  # a refusal is one short object; never read a proxy's novel
# melange.reports.MAX_HISTORY (that module imports SQLAlchemy; a test keeps the two equal):
# GET /v1/history's `limit` is the page size, so the client checks history's own bound.
HISTORY_MAX = 100_000
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space: one header value


class Remote:
    """melanged's HTTP API at `url`, over one keep-alive connection for the process."""

    def __init__(self, url: str, token_file: str | None = None, ca_file: str | None = None):
        self.scheme, self.host, self.port, self.prefix = parse_url(url)
        self.url = url.rstrip("/")
        self.token_file = token_file
        self.headers = {"User-Agent": f"melange/{__version__}", "Accept": "*/*"}
        if token_file:
            self.headers["Authorization"] = f"Bearer {read_token(token_file)}"
        self.context = tls_context(ca_file) if self.scheme == "https" else None
        self.connection: Connection | None = None
        self.last: Response | None = None  # the latest answer on the connection

    def call(self, operation: str, params: dict[str, Any]) -> Any:
        """Run `operation` in melanged; its result, or what it raised (same exit code)."""
        route = route_of(operation)
        given = {key: value for key, value in params.items() if value is not None}
        path = self.prefix + fill_path(route, given)
        rest = {key: value for key, value in given.items() if key not in route.path_params()}
        if route.paged:
            return self._walk(path, rest, operation)
        if route.method in ("GET", "DELETE"):
            response = self._request(route.method, path + query_string(rest))
        else:
            response = self._request(route.method, path, json.dumps(rest).encode())
        return self._result(response, route)

    def upload(self, operation: str, params: dict[str, Any], pieces: Iterable[str]) -> Any:
        """Run `operation` with its document as the body, sent chunked as it is read
        (melanged.http.upload); the other parameters in the query string. An answer
        given before the whole body was sent (a refusal) is read, never a broken pipe."""
        route = route_of(operation)
        given = {key: value for key, value in params.items() if value is not None}
        target = self.prefix + fill_path(route, given) + query_string(given)
        headers = {**self.headers, "Content-Type": "text/plain; charset=utf-8"}

        def body() -> Iterator[bytes]:
            if self.connection is not None and self.connection.sock is not None:
                self.connection.sock.settimeout(UPLOAD_TIMEOUT)  # the answer: when it is done
            for piece in pieces:
                if piece:
                    yield piece.encode()

        self.close()  # a body that cannot be sent twice goes on a connection of its own
        try:
            response = self._send(route.method, target, body(), headers)
        except (Closed, ConnectionResetError, BrokenPipeError):
            response = self._early_answer()
        if response.status >= 300:
            raise self._refusal(response)
        return self._result(response, route)

    def _early_answer(self) -> Response:
        """The answer melanged sent while the body was still going (then it closed)."""
        try:
            assert self.connection is not None
            self.last = self.connection.getresponse()
            return self.last
        except (AssertionError, OSError, http.client.HTTPException):
            self.close()
            raise StoreUnavailable(
                f"melanged at {self.url} closed the connection during the upload"
            ) from None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        self.last = None

    def _walk(self, path: str, params: dict[str, Any], operation: str) -> list[Any]:
        """Every page of a paged list, in order: the whole list, as direct mode has it.

        `limit` and `after` name the page in a paged route's query. An operation with a
        `limit` of its own (history: the newest N changes, oldest first) is served
        newest first, page by page: the walk stops at N, and turns the list round."""
        newest = params.pop("limit", None) if operation == "history" else None
        if newest is not None and not 1 <= newest <= HISTORY_MAX:
            raise InvalidInput(
                f"history: parameter limit is out of range (from 1 to {HISTORY_MAX}): {newest}"
            )
        size = PAGE_SIZE if newest is None else min(PAGE_SIZE, newest)
        items: list[Any] = []
        target: str | None = path + query_string({**params, "limit": size})
        while target is not None and (newest is None or len(items) < newest):
            page = self._result(self._request("GET", target), Http("GET", path))
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise StoreUnavailable(f"{self.url} answered a list without its items")
            items.extend(page["items"])
            following = page.get("next")
            target = self._within(following) if following else None
        return items if newest is None else list(reversed(items[:newest]))

    def stream(self, operation: str, params: dict[str, Any], sink: Callable[[Any], object]) -> None:
        """A streamed read (melange.streaming.STREAMED): each record, or export entity, to
        `sink` as its page or line arrives; what `call` returns, never held whole."""
        from melange.streaming import newest, walk

        route = route_of(operation)
        given = {key: value for key, value in params.items() if value is not None}
        path = self.prefix + fill_path(route, given)
        rest = {key: value for key, value in given.items() if key not in route.path_params()}
        if not route.paged:
            return self._entities(self._request("GET", path + query_string(rest)), sink)
        limit = rest.pop("limit", None) if operation == "history" else None
        if limit is not None and not 1 <= limit <= HISTORY_MAX:
            raise InvalidInput(
                f"history: parameter limit is out of range (from 1 to {HISTORY_MAX}): {limit}"
            )

        def fetch(target: str | None) -> tuple[list[Any], str | None]:
            first = path + query_string({**rest, "limit": PAGE_SIZE})
            page = self._result(self._request("GET", target or first), Http("GET", path))
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise StoreUnavailable(f"{self.url} answered a list without its items")
            following = page.get("next")
            return page["items"], self._within(following) if following else None

        for record in newest(fetch, limit) if limit is not None else walk(fetch):
            sink(record)
        return None

    def _entities(self, response: Response, sink: Callable[[Any], object]) -> None:
        """An NDJSON export's entities to `sink`, a line at a time."""
        from melange.transfer_stream import parse_ndjson

        try:
            for kind, item in parse_ndjson((line.decode("utf-8") for line in response), {}):
                sink({kind: item})
        except (OSError, BadResponse) as error:
            self.close()
            raise StoreUnavailable(f"lost melanged at {self.url}: {_reason(error)}") from None
        except UnicodeDecodeError:
            raise StoreUnavailable(f"{self.url} answered an export that is not UTF-8") from None

    def _within(self, target: str) -> str:
        """A `next` link (path and query) under this URL's path prefix, if it has one."""
        if not target.startswith("/"):
            raise StoreUnavailable(f"{self.url} answered a next link that is not a path")
        return target if target.startswith(self.prefix + "/") else self.prefix + target

    def _result(self, response: Response, route: Http) -> Any:
        """The body as the operation's result: JSON, text, or an NDJSON export."""
        try:
            if route.media == "application/x-ndjson":
                from melange.transfer_stream import from_ndjson

                return from_ndjson(line.decode("utf-8") for line in response)
            body = response.read()
        except (OSError, BadResponse) as error:
            self.close()
            raise StoreUnavailable(f"lost melanged at {self.url}: {_reason(error)}") from None
        except UnicodeDecodeError:
            raise StoreUnavailable(f"{self.url} answered an export that is not UTF-8") from None
        try:
            if route.media.startswith("text/"):
                return body.decode("utf-8")
            return json.loads(body) if body else None
        except ValueError:  # UnicodeDecodeError too
            raise StoreUnavailable(
                f"{self.url} answered something that is not {route.media}"
            ) from None

    def _request(self, method: str, target: str, body: bytes | None = None) -> Response:
        """Send one request; the response when it succeeded, else its error raised.

        A GET on a kept-alive connection the server has meanwhile closed is sent again
        on a new one; anything else is sent once (an allocation must not happen twice)."""
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        reused = self.connection is not None
        try:
            response = self._send(method, target, body, headers)
        except (Closed, ConnectionResetError, BrokenPipeError):
            self.close()
            if not (reused and method == "GET"):
                raise StoreUnavailable(
                    f"melanged at {self.url} closed the connection without an answer"
                    + ("" if self.scheme == "https" else " (is it HTTPS? then use https://)")
                ) from None
            response = self._send(method, target, body, headers)
        if response.status >= 300:  # a redirect too: the token is not sent on to elsewhere
            raise self._refusal(response)
        return response

    def _send(self, method: str, target: str, body: bytes | Iterable[bytes] | None,
              headers: dict[str, str]):  # fmt: skip
        """One request and its response's head; connection failures become exit 6."""
        if self.last is not None and (self.last.will_close or not self.last.isclosed()):
            self.close()  # the server ends the connection, or an unread body is in the way
        try:
            connection = self._connection()
            connection.request(method, target, body, headers)
            self.last = connection.getresponse()
            return self.last
        except (Closed, ConnectionResetError, BrokenPipeError):
            raise
        except ssl.SSLCertVerificationError as error:
            self.close()
            raise StoreUnavailable(
                f"TLS failure with {self.url}: {error.verify_message or _reason(error)}"
                " (--ca-file names a CA to trust)"
            ) from None
        except ssl.SSLError as error:
            self.close()
            hint = (
                " (is it plain HTTP? then use http://)"
                if error.reason == "WRONG_VERSION_NUMBER"
                else ""
            )
            raise StoreUnavailable(f"TLS failure with {self.url}: {_reason(error)}{hint}") from None
        except TimeoutError:
            self.close()
            raise StoreUnavailable(f"melanged at {self.url} did not answer in time") from None
        except BadResponse as error:
            self.close()
            raise StoreUnavailable(f"{self.url} answered, but not in HTTP: {error}") from None
        except OSError as error:
            self.close()
            reason = _reason(error)
            raise StoreUnavailable(f"cannot reach melanged at {self.url}: {reason}") from None

    def _connection(self) -> Connection:
        """The kept-alive connection, made on first use: connected within CONNECT_TIMEOUT,
        then patient for TIMEOUT (http.client sets TCP_NODELAY itself)."""
        if self.connection is None:
            connection = (
                http.client.HTTPSConnection(
                    self.host, self.port, timeout=CONNECT_TIMEOUT, context=self.context
                )
                if self.context is not None
                else http.client.HTTPConnection(self.host, self.port, timeout=CONNECT_TIMEOUT)
            )
            connection.connect()
            assert connection.sock is not None
            connection.sock.settimeout(TIMEOUT)
            self.connection = connection
        return self.connection

    def _refusal(self, response: Response) -> MelangeError:
        """The error a problem+json answer carries (its code, its exit code)."""
        try:
            body = response.read(ERROR_BODY_LIMIT)
        except (OSError, BadResponse):
            body = b""
        if not response.isclosed():
            self.close()  # an unread rest would be taken for the next answer
        problem = _problem(body, response.getheader("Content-Type", ""))
        status = response.status
        if problem is None:
            moved = response.getheader("Location") if 300 <= status < 400 else None
            return self._bare_refusal(status, response.reason, moved)
        cls = BY_CODE.get(str(problem.get("code")), MelangeError)
        message = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        if cls is Unauthenticated and self.token_file is None:
            message += " (no token given: --token-file or MELANGE_TOKEN_FILE)"
        raised = cls(message)
        exit_code = problem.get("exit_code")
        if isinstance(exit_code, int) and not isinstance(exit_code, bool) and 0 < exit_code < 126:
            raised.exit_code = exit_code  # never 0 for a refusal, whatever a server says
        return raised

    def _bare_refusal(self, status: int, reason: str, moved: str | None = None) -> MelangeError:
        """A refusal without problem+json: a proxy or something that is not melanged."""
        said = f"{self.url} answered HTTP {status} {reason}".rstrip()
        if moved:
            said += f" (to {moved[:200]}: give --url that address)"
        if status == 401:
            return Unauthenticated(said)
        if status == 403:
            return PermissionDenied(said)
        if status == 413:
            return InvalidInput(f"{said}: the request is too large")
        return StoreUnavailable(f"{said}; is it melanged's API?" if status == 404 else said)


def _problem(body: bytes, media: str) -> dict[str, Any] | None:
    if media.split(";")[0].strip() not in ("application/problem+json", "application/json"):
        return None
    try:
        problem = json.loads(body)
    except ValueError:
        return None
    return problem if isinstance(problem, dict) and "code" in problem else None


def _reason(error: BaseException) -> str:
    """An exception as a short reason: no `(_ssl.c:1006)`, no errno tuple."""
    if isinstance(error, ssl.SSLError) and error.reason:
        text = str(error.args[1] if len(error.args) > 1 else error)
    elif isinstance(error, OSError) and error.strerror:
        text = error.strerror
    else:
        text = str(error) or type(error).__name__
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)


def route_of(operation: str) -> Http:
    """The operation's HTTP route; a host-local one is refused here (exit 2)."""
    declared = OPERATIONS.get(operation)
    if declared is None:
        raise InvalidInput(f"unknown operation {operation!r}")
    if declared.http is None:
        command = operation.replace(".", " ").replace("_", "-")
        raise InvalidInput(
            f"'{command}' is host-local: run it on the store's host (with --db or --socket),"
            " not through --url"
        )
    return declared.http


def fill_path(route: Http, params: dict[str, Any]) -> str:
    """The route's path with each `{name}` segment filled in, percent-encoded (a CIDR's
    slash too: `{block:path}` takes it back)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            raise InvalidInput(f"missing parameter {name}")
        return quote(str(params[name]), safe="")

    return re.sub(r"{(\w+)(?::\w+)?}", value, route.path)


def query_string(params: dict[str, Any]) -> str:
    """`?a=1&b=true&dns=x&dns=y`: lists as repeated keys, booleans as true/false."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        for item in value if isinstance(value, list | tuple) else (value,):
            text = ("true" if item else "false") if isinstance(item, bool) else str(item)
            pairs.append((key, text))
    return "?" + urlencode(pairs) if pairs else ""


def parse_url(url: str) -> tuple[str, str, int, str]:
    """`https://HOST[:PORT][/PREFIX]` as scheme, host, port and path prefix (exit 2 when
    it is not one; a user or password in it is refused, the token has its own file)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidInput(f"--url {url!r} is not a URL: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"--url must be https://HOST[:PORT] (or http://), not {url!r}")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("--url holds a user or password; give the token with --token-file")
    if parts.query or parts.fragment:
        raise InvalidInput(f"--url takes no query or fragment: {url!r}")
    port = port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


def read_token(path: str) -> str:
    """The bearer token in `path` (surrounding whitespace ignored); never shown."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(4096).strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise InvalidInput(f"cannot read token file {path}: {reason}") from None
    if not text:
        raise InvalidInput(f"token file {path} is empty")
    if not _TOKEN.fullmatch(text):
        raise InvalidInput(f"token file {path} does not hold one token (one word, no spaces)")
    return text


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Certificates verified, host names checked; `ca_file` (PEM) replaces the system's
    CAs, for a server whose certificate a private CA signed."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as error:
        raise InvalidInput(f"cannot read CA file {ca_file}: {_reason(error)}") from None
