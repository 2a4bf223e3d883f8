#!/usr/bin/env python3
"""Fault-injecting, recording HTTP proxy between the AWS SDK and a `moto` server.

The certplane integration tests point the AWS SDK at this proxy
(``AWS_ENDPOINT_URL=http://127.0.0.1:PORT``); the proxy forwards every call to
a moto server (``--upstream``) and, on request, misbehaves the way real AWS can:

* answers ``ThrottlingException`` for a share of ACM calls (``throttle_share``,
  optionally limited to ``throttle_operations``);
* enforces an ImportCertificate quota with a token bucket (``import_rate``);
* performs an ImportCertificate upstream but "loses" the answer, replying 500
  instead (``drop_import_responses``);
* rewrites the serial number in DescribeCertificate answers (``wrong_serial``).

It also records every forwarded call (ACM operation, status sent to the client,
injected fault, time, CertificateArn) so tests can assert which ACM operations
the certplane driver calls.

ACM speaks JSON 1.1: ``POST /`` with ``X-Amz-Target: CertificateManager.<Op>``.
STS calls (form-encoded, ``Action=AssumeRole``) pass through untouched.

Usage::

    python3 aws_proxy.py --upstream http://127.0.0.1:5000 --port 0 --port-file /tmp/x

Control API (JSON, never forwarded):

* ``GET  /__proxy/health``    -> ``{"ok": true}``
* ``GET  /__proxy/log``       -> ``{"calls": [...]}`` in arrival order
* ``POST /__proxy/reset-log`` -> clears the log, ``{}``
* ``POST /__proxy/config``    -> merges the given keys, answers the full config

Python 3 standard library only.
"""

import argparse
import http.client
import http.server
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

CONTROL_PREFIX = "/__proxy/"
ACM_TARGET_PREFIX = "CertificateManager."
WRONG_SERIAL = "00:11:22:33:44:55:66:77"
AMZ_JSON = "application/x-amz-json-1.1"
UPSTREAM_TIMEOUT = 60.0

# Hop-by-hop headers (RFC 7230 6.1) are never relayed; Content-Length is always
# recomputed for the body actually sent.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}
# Additionally not forwarded upstream: Host is rewritten, Expect was already
# handled by us, and Accept-Encoding is dropped so answers come back uncompressed
# (needed to rewrite DescribeCertificate bodies).
NOT_FORWARDED = HOP_BY_HOP | {"host", "expect", "accept-encoding"}

DEFAULT_CONFIG = {
    "throttle_share": 0.0,
    "throttle_operations": [],
    "import_rate": 0.0,
    "drop_import_responses": 0,
    "wrong_serial": False,
    "seed": 1,
}


class ConfigError(ValueError):
    """A /__proxy/config request carried an invalid key or value."""


class ProxyState:
    """All state shared between request threads, guarded by one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.config = dict(DEFAULT_CONFIG, throttle_operations=[])
        self.rng = random.Random(self.config["seed"])
        self.calls = []
        # Token bucket for ImportCertificate: capacity 1, refilled at import_rate/s.
        self.tokens = 1.0
        self.tokens_at = time.monotonic()

    # -- configuration ----------------------------------------------------

    @staticmethod
    def _validate(update):
        """Check a config update; return the normalised values to apply."""
        if not isinstance(update, dict):
            raise ConfigError("config must be a JSON object")
        out = {}
        for key, value in update.items():
            if key not in DEFAULT_CONFIG:
                raise ConfigError("unknown config key: %r" % key)
            if key == "throttle_share":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                    raise ConfigError("throttle_share must be a number in 0..1")
                out[key] = float(value)
            elif key == "throttle_operations":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError("throttle_operations must be a list of strings")
                out[key] = list(value)
            elif key == "import_rate":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ConfigError("import_rate must be a number >= 0")
                out[key] = float(value)
            elif key == "drop_import_responses":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigError("drop_import_responses must be an integer >= 0")
                out[key] = value
            elif key == "wrong_serial":
                if not isinstance(value, bool):
                    raise ConfigError("wrong_serial must be a boolean")
                out[key] = value
            elif key == "seed":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError("seed must be an integer")
                out[key] = value
        return out

    def update_config(self, update):
        """Apply a (validated, all-or-nothing) config update; return the full config."""
        values = self._validate(update)
        with self.lock:
            self.config.update(values)
            if "seed" in values:
                self.rng = random.Random(values["seed"])
            if "import_rate" in values:
                # A new quota starts with a full bucket.
                self.tokens = 1.0
                self.tokens_at = time.monotonic()
            return self._config_copy()

    def _config_copy(self):
        cfg = dict(self.config)
        cfg["throttle_operations"] = list(cfg["throttle_operations"])
        return cfg

    def get_config(self):
        with self.lock:
            return self._config_copy()

    # -- fault decisions (made before forwarding) -------------------------

    def decide_before(self, operation, is_acm):
        """Return "throttle", "rate_limit", "drop_response" or None for a new call."""
        with self.lock:
            cfg = self.config
            if is_acm and cfg["throttle_share"] > 0:
                ops = cfg["throttle_operations"]
                if not ops or operation in ops:
                    if self.rng.random() < cfg["throttle_share"]:
                        return "throttle"
            if is_acm and operation == "ImportCertificate":
                rate = cfg["import_rate"]
                if rate > 0:
                    now = time.monotonic()
                    self.tokens = min(1.0, self.tokens + (now - self.tokens_at) * rate)
                    self.tokens_at = now
                    if self.tokens < 1.0:
                        return "rate_limit"
                    self.tokens -= 1.0
                if cfg["drop_import_responses"] > 0:
                    cfg["drop_import_responses"] -= 1
                    return "drop_response"
            return None

    def wrong_serial_enabled(self):
        with self.lock:
            return self.config["wrong_serial"]

    # -- call log ---------------------------------------------------------

    def record(self, entry):
        with self.lock:
            self.calls.append(entry)

    def get_log(self):
        with self.lock:
            return [dict(c) for c in self.calls]

    def reset_log(self):
        with self.lock:
            self.calls.clear()


def classify(headers, body):
    """Return (operation, is_acm, arn) for an AWS request."""
    target = headers.get("X-Amz-Target")
    arn = None
    if target:
        operation = target.rsplit(".", 1)[-1] or "unknown"
        is_acm = target.startswith(ACM_TARGET_PREFIX)
        try:
            doc = json.loads(body.decode("utf-8")) if body else None
            if isinstance(doc, dict) and isinstance(doc.get("CertificateArn"), str):
                arn = doc["CertificateArn"]
        except (ValueError, UnicodeDecodeError):
            pass
        return operation, is_acm, arn
    # Query/form protocol (STS and friends): Action=... in the body or the URL.
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8")) if body else {}
    except UnicodeDecodeError:
        form = {}
    action = form.get("Action")
    if action:
        return action[0], False, None
    return "unknown", False, None


def aws_error(status, error_type, message):
    """Build (status, headers, body) for a JSON 1.1 AWS error answer."""
    body = json.dumps({"__type": error_type, "message": message}, separators=(",", ":")).encode()
    headers = [
        ("Content-Type", AMZ_JSON),
        ("x-amzn-ErrorType", error_type),
        ("x-amzn-RequestId", str(uuid.uuid4())),
    ]
    return status, headers, body


def throttle_answer():
    return aws_error(400, "ThrottlingException", "Rate exceeded")


def rewrite_serial(body):
    """Replace Certificate.Serial in a DescribeCertificate answer; None if not applicable."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    cert = doc.get("Certificate") if isinstance(doc, dict) else None
    if not isinstance(cert, dict):
        return None
    cert["Serial"] = WRONG_SERIAL
    return json.dumps(doc).encode("utf-8")


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for the SDK's connection pool
    server_version = "certplane-aws-proxy/1"

    # Set on the class by main().
    state = None
    upstream = None  # urllib.parse.SplitResult
    verbose = False

    def log_message(self, format, *args):  # noqa: A002 - signature from base class
        if self.verbose:
            sys.stderr.write("aws_proxy: %s\n" % (format % args))

    # Every method goes through the same entry point.
    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    # -- plumbing ---------------------------------------------------------

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # Skip trailers up to the blank line.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status, headers, body):
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self._headers_sent = True
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status, doc):
        body = json.dumps(doc).encode("utf-8")
        self._send(status, [("Content-Type", "application/json")], body)

    def _handle(self):
        self._headers_sent = False
        entry = None
        try:
            body = self._read_body()
            path = urllib.parse.urlsplit(self.path).path
            if path.startswith(CONTROL_PREFIX):
                self._control(path, body)
                return
            operation, is_acm, arn = classify(self.headers, body)
            entry = {
                "operation": operation,
                "status": None,
                "injected": None,
                "at": time.time(),
                "arn": arn,
                "quota_wait": False,  # reserved
            }
            status, headers, out = self._proxy(body, operation, is_acm, entry)
            entry["status"] = status
            self.state.record(entry)
            entry = None
            self._send(status, headers, out)
        except Exception as exc:  # one bad request must never kill the server
            if entry is not None:
                entry["status"] = 502
                self.state.record(entry)
            self.close_connection = True
            if not self._headers_sent:
                try:
                    self._send_json(502, {"__type": "ProxyError", "message": "%s: %s" % (type(exc).__name__, exc)})
                except Exception:
                    pass

    def _proxy(self, body, operation, is_acm, entry):
        """Forward (or not) one AWS call; return (status, headers, body) for the client."""
        injected = self.state.decide_before(operation, is_acm)
        if injected in ("throttle", "rate_limit"):
            entry["injected"] = injected
            return throttle_answer()

        status, headers, out = self._forward(body)

        if injected == "drop_response":
            # The import happened upstream; the client never learns about it.
            entry["injected"] = injected
            return aws_error(500, "InternalFailure", "injected: response lost")

        if is_acm and operation == "DescribeCertificate" and status == 200 and self.state.wrong_serial_enabled():
            rewritten = rewrite_serial(out)
            if rewritten is not None:
                entry["injected"] = "wrong_serial"
                out = rewritten
        return status, headers, out

    def _forward(self, body):
        up = self.upstream
        host = up.hostname
        port = up.port or (443 if up.scheme == "https" else 80)
        conn_cls = http.client.HTTPSConnection if up.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(host, port, timeout=UPSTREAM_TIMEOUT)
        try:
            headers = {}
            for name, value in self.headers.items():
                if name.lower() not in NOT_FORWARDED:
                    headers[name] = value
            headers["Host"] = up.netloc.rsplit("@", 1)[-1]
            if body or self.command in ("POST", "PUT", "PATCH"):
                headers["Content-Length"] = str(len(body))
            path = up.path.rstrip("/") + self.path
            conn.request(self.command, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            out = resp.read()
            return resp.status, resp.getheaders(), out
        finally:
            conn.close()

    def _control(self, path, body):
        name = path[len(CONTROL_PREFIX):].strip("/")
        method = self.command
        if name == "health" and method == "GET":
            self._send_json(200, {"ok": True})
        elif name == "log" and method == "GET":
            self._send_json(200, {"calls": self.state.get_log()})
        elif name == "reset-log" and method == "POST":
            self.state.reset_log()
            self._send_json(200, {})
        elif name == "config" and method == "GET":
            self._send_json(200, self.state.get_config())
        elif name == "config" and method == "POST":
            try:
                update = json.loads(body.decode("utf-8")) if body.strip() else {}
                self._send_json(200, self.state.update_config(update))
            except (ValueError, UnicodeDecodeError) as exc:  # includes ConfigError
                self._send_json(400, {"error": str(exc)})
        elif name in ("health", "log", "reset-log", "config"):
            self._send_json(405, {"error": "method not allowed: %s %s" % (method, path)})
        else:
            self._send_json(404, {"error": "unknown control endpoint: %s" % path})


class ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # Client resets and the like: stay quiet (no traceback spam).
        if ProxyHandler.verbose:
            super().handle_error(request, client_address)


def write_port_file(path, port):
    """Atomically write the port number (digits + newline) to path."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".aws_proxy_port.", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--upstream", required=True, help="moto base URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--port", type=int, default=0, help="listen port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--port-file", help="write the chosen port here once listening")
    parser.add_argument("--verbose", action="store_true", help="log requests and errors to stderr")
    args = parser.parse_args(argv)

    upstream = urllib.parse.urlsplit(args.upstream)
    if upstream.scheme not in ("http", "https") or not upstream.hostname:
        parser.error("--upstream must be an http(s) URL with a host")

    ProxyHandler.state = ProxyState()
    ProxyHandler.upstream = upstream
    ProxyHandler.verbose = args.verbose

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    server = ProxyServer(("127.0.0.1", args.port), ProxyHandler)
    try:
        if args.port_file:
            write_port_file(args.port_file, server.server_address[1])
        server.serve_forever()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
