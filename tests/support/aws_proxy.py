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
* rewrites the serial number in DescribeCertificate answers (``wrong_serial``);
* models real AWS idempotency tokens, which moto ignores or half-implements
  (``idempotency``);
* performs any ACM / ACM PCA call upstream but "loses" the answer
  (``drop_operations``), or delays the answer after the call happened
  upstream (``hold_operations``).

It also records every call (operation, service, status sent to the client,
injected fault, time, CertificateArn, CertificateAuthorityArn, IdempotencyToken)
so tests can assert which AWS operations the certplane driver calls, and counts
the calls actually forwarded upstream.

ACM speaks JSON 1.1: ``POST /`` with ``X-Amz-Target: CertificateManager.<Op>``;
ACM Private CA likewise with ``X-Amz-Target: ACMPrivateCA.<Op>``. STS calls
(form-encoded, ``Action=AssumeRole``) pass through untouched.

Config keys (``POST /__proxy/config``; unknown keys and bad values -> 400, and
an update is applied all-or-nothing):

* ``throttle_share`` (number 0..1, default 0): share of ACM calls answered with
  ``ThrottlingException`` (400) without forwarding; drawn from a PRNG seeded by
  ``seed``.
* ``throttle_operations`` (list of str, default ``[]`` = all ACM operations):
  limits ``throttle_share`` to these ACM operations.
* ``import_rate`` (number >= 0, default 0 = off): ACM ImportCertificate quota in
  calls per second (token bucket of capacity 1); calls over it get
  ``ThrottlingException``. Setting it refills the bucket.
* ``drop_import_responses`` (int >= 0, default 0): the next N ACM
  ImportCertificate calls are forwarded, then answered 500 ``InternalFailure``.
  Counts down.
* ``wrong_serial`` (bool, default false): rewrite ``Certificate.Serial`` in
  ACM DescribeCertificate answers.
* ``seed`` (int, default 1): reseeds the throttling PRNG.
* ``idempotency`` (bool, default false): model AWS idempotency for
  ``ACMPrivateCA.IssueCertificate`` and ``CertificateManager.RequestCertificate``.
  The first call carrying a given (operation, ``CertificateAuthorityArn``,
  ``IdempotencyToken``) is forwarded; a 200 answer is cached (for 5 minutes for
  IssueCertificate, 1 hour for RequestCertificate, as AWS documents) and later
  calls with the same triple get the cached answer without forwarding (logged
  ``injected: "idempotent_replay"``). A call whose triple is in flight waits
  for the first call's upstream answer, so concurrent retries reach upstream
  once; if that answer is not 200 the waiting call is tried afresh. Calls
  without a token are always forwarded. Setting it to false drops the cache.
* ``drop_operations`` (object operation -> int >= 0, default ``{}``): for each
  ACM or ACM PCA call of that operation while its count is > 0, decrement,
  forward upstream (so the effect happens), then answer 500 ``InternalFailure``
  "injected: response lost" (logged ``injected: "drop_response"``). Idempotent
  replays are neither dropped nor counted down. An update replaces the whole
  mapping. (For ImportCertificate, ``drop_import_responses`` is used first.)
* ``hold_operations`` (object operation -> seconds, number 0..120, default
  ``{}``): after forwarding an ACM or ACM PCA call of that operation and
  receiving the upstream answer, wait that long before answering the client
  (logged ``injected: "held"`` unless another injection applies). An update
  replaces the whole mapping.

Operation names in ``throttle_operations``, ``drop_operations`` and
``hold_operations`` are bare (``"IssueCertificate"``, ``"GetCertificate"``);
the latter two match both ACM and ACM PCA operations of that name.

Log entry fields: ``operation``, ``service`` (``"acm"``, ``"acm-pca"``,
``"sts"`` or ``"other"``), ``status`` (sent to the client), ``injected``
(``null``, ``"throttle"``, ``"rate_limit"``, ``"drop_response"``,
``"wrong_serial"``, ``"idempotent_replay"``, ``"held"`` or
``"idempotent_wait_timeout"``), ``at`` (Unix time of arrival), ``arn`` (body
``CertificateArn``), ``ca_arn`` (body ``CertificateAuthorityArn``), ``token``
(body ``IdempotencyToken``), ``quota_wait`` (reserved, false). Entries are
appended once the answer is ready (after any hold), before it is sent.

Usage::

    python3 aws_proxy.py --upstream http://127.0.0.1:5000 --port 0 --port-file /tmp/x

Control API (JSON, never forwarded):

* ``GET  /__proxy/health``    -> ``{"ok": true}``
* ``GET  /__proxy/log``       -> ``{"calls": [...]}`` in arrival order
* ``GET  /__proxy/stats``     -> ``{"forwarded": {"<Op>": n, ...},
  "forwarded_by_service": {"<service>": {"<Op>": n, ...}, ...}}``: calls
  actually forwarded upstream, counted when forwarding starts (before any hold)
* ``POST /__proxy/reset-log`` -> clears the log and the stats, ``{}``
* ``GET  /__proxy/config``    -> the full config
* ``POST /__proxy/config``    -> merges the given keys, answers the full config

Python 3 standard library only.
"""

import argparse
import http.client
import http.server
import json
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

CONTROL_PREFIX = "/__proxy/"
ACM_TARGET_PREFIX = "CertificateManager."
PCA_TARGET_PREFIX = "ACMPrivateCA."
WRONG_SERIAL = "00:11:22:33:44:55:66:77"
AMZ_JSON = "application/x-amz-json-1.1"
UPSTREAM_TIMEOUT = 60.0
MAX_HOLD_SECONDS = 120.0
# How long a call waits for an in-flight call with the same idempotency key.
IDEMPOTENT_WAIT_SECONDS = 300.0
# (service, operation) -> how long AWS honours an idempotency token, seconds.
IDEMPOTENT_OPERATIONS = {
    ("acm-pca", "IssueCertificate"): 300.0,
    ("acm", "RequestCertificate"): 3600.0,
}
# Services whose operations drop_operations / hold_operations apply to.
FAULTABLE_SERVICES = ("acm", "acm-pca")
# Query-protocol actions recognised as STS when the request carries no SigV4
# credential scope.
STS_ACTIONS = {
    "AssumeRole",
    "AssumeRoleWithSAML",
    "AssumeRoleWithWebIdentity",
    "AssumeRoot",
    "DecodeAuthorizationMessage",
    "GetAccessKeyInfo",
    "GetCallerIdentity",
    "GetFederationToken",
    "GetSessionToken",
}
CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]*/\d{8}/[^/,\s]+/([^/,\s]+)/aws4_request")

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
    "idempotency": False,
    "drop_operations": {},
    "hold_operations": {},
}


class ConfigError(ValueError):
    """A /__proxy/config request carried an invalid key or value."""


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float))


class _IdempotencySlot:
    """One idempotency key: in flight until `answer` is set or the slot is dropped."""

    __slots__ = ("event", "answer", "at")

    def __init__(self):
        self.event = threading.Event()
        self.answer = None  # (status, headers, body) of the first 200 answer
        self.at = None  # time.monotonic() when answer was cached


class ProxyState:
    """All state shared between request threads, guarded by one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.config = self._fresh_config()
        self.rng = random.Random(self.config["seed"])
        self.calls = []
        # Token bucket for ImportCertificate: capacity 1, refilled at import_rate/s.
        self.tokens = 1.0
        self.tokens_at = time.monotonic()
        # (service, operation, ca_arn, token) -> _IdempotencySlot
        self.idempotency = {}
        # service -> operation -> calls forwarded upstream
        self.forwarded = {}

    @staticmethod
    def _fresh_config():
        cfg = dict(DEFAULT_CONFIG)
        cfg["throttle_operations"] = []
        cfg["drop_operations"] = {}
        cfg["hold_operations"] = {}
        return cfg

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
                if not _is_number(value) or not 0 <= value <= 1:
                    raise ConfigError("throttle_share must be a number in 0..1")
                out[key] = float(value)
            elif key == "throttle_operations":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError("throttle_operations must be a list of strings")
                out[key] = list(value)
            elif key == "import_rate":
                if not _is_number(value) or value < 0:
                    raise ConfigError("import_rate must be a number >= 0")
                out[key] = float(value)
            elif key == "drop_import_responses":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigError("drop_import_responses must be an integer >= 0")
                out[key] = value
            elif key in ("wrong_serial", "idempotency"):
                if not isinstance(value, bool):
                    raise ConfigError("%s must be a boolean" % key)
                out[key] = value
            elif key == "seed":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError("seed must be an integer")
                out[key] = value
            elif key == "drop_operations":
                if not isinstance(value, dict) or not all(
                    isinstance(op, str) and not isinstance(n, bool) and isinstance(n, int) and n >= 0
                    for op, n in value.items()
                ):
                    raise ConfigError("drop_operations must be an object of operation -> integer >= 0")
                out[key] = dict(value)
            elif key == "hold_operations":
                if not isinstance(value, dict) or not all(
                    isinstance(op, str) and _is_number(s) and 0 <= s <= MAX_HOLD_SECONDS
                    for op, s in value.items()
                ):
                    raise ConfigError(
                        "hold_operations must be an object of operation -> seconds in 0..%g" % MAX_HOLD_SECONDS
                    )
                out[key] = {op: float(s) for op, s in value.items()}
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
            if values.get("idempotency") is False:
                # Forget cached answers; in-flight calls finish on their own.
                self.idempotency = {k: s for k, s in self.idempotency.items() if s.answer is None}
            return self._config_copy()

    def _config_copy(self):
        cfg = dict(self.config)
        cfg["throttle_operations"] = list(cfg["throttle_operations"])
        cfg["drop_operations"] = dict(cfg["drop_operations"])
        cfg["hold_operations"] = dict(cfg["hold_operations"])
        return cfg

    def get_config(self):
        with self.lock:
            return self._config_copy()

    # -- fault decisions (made before forwarding) -------------------------

    def decide_before(self, operation, is_acm):
        """Return "throttle", "rate_limit" or None for a new call (nothing forwarded yet)."""
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
            return None

    def take_drop(self, operation, service):
        """Called right before forwarding: return "drop_response" (counting down) or None."""
        with self.lock:
            cfg = self.config
            if service == "acm" and operation == "ImportCertificate" and cfg["drop_import_responses"] > 0:
                cfg["drop_import_responses"] -= 1
                return "drop_response"
            if service in FAULTABLE_SERVICES and cfg["drop_operations"].get(operation, 0) > 0:
                cfg["drop_operations"][operation] -= 1
                return "drop_response"
            return None

    def hold_seconds(self, operation, service):
        if service not in FAULTABLE_SERVICES:
            return 0.0
        with self.lock:
            return self.config["hold_operations"].get(operation, 0.0)

    def wrong_serial_enabled(self):
        with self.lock:
            return self.config["wrong_serial"]

    # -- idempotency --------------------------------------------------------

    def idempotency_claim(self, key, ttl):
        """Return ("forward", None), ("owner", slot), ("wait", slot) or ("replay", answer)."""
        with self.lock:
            if not self.config["idempotency"]:
                return "forward", None
            slot = self.idempotency.get(key)
            if slot is not None and slot.answer is not None and time.monotonic() - slot.at > ttl:
                del self.idempotency[key]
                slot = None
            if slot is None:
                slot = _IdempotencySlot()
                self.idempotency[key] = slot
                return "owner", slot
            if slot.answer is not None:
                return "replay", slot.answer
            return "wait", slot

    def idempotency_finish(self, key, slot, answer):
        """The owner's upstream call ended: cache a 200 answer, or free the key."""
        with self.lock:
            if answer is not None:
                slot.answer = answer
                slot.at = time.monotonic()
            elif self.idempotency.get(key) is slot:
                del self.idempotency[key]
        slot.event.set()

    # -- stats ------------------------------------------------------------

    def count_forward(self, operation, service):
        with self.lock:
            ops = self.forwarded.setdefault(service, {})
            ops[operation] = ops.get(operation, 0) + 1

    def get_stats(self):
        with self.lock:
            total = {}
            for ops in self.forwarded.values():
                for op, n in ops.items():
                    total[op] = total.get(op, 0) + n
            by_service = {svc: dict(ops) for svc, ops in self.forwarded.items()}
        return {"forwarded": total, "forwarded_by_service": by_service}

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
            self.forwarded.clear()


def _sigv4_service(headers, query):
    """The service named in the SigV4 credential scope (header or presigned URL), or None."""
    sources = [headers.get("Authorization") or ""]
    cred = query.get("X-Amz-Credential")
    if cred:
        sources.append("Credential=" + cred[0])
    for text in sources:
        m = CREDENTIAL_SCOPE.search(text)
        if m:
            return m.group(1).lower()
    return None


def classify_call(headers, body, url="/"):
    """Describe an AWS request: dict with operation, service, is_acm, arn, ca_arn, token."""
    call = {"operation": "unknown", "service": "other", "is_acm": False, "arn": None, "ca_arn": None, "token": None}
    target = headers.get("X-Amz-Target")
    if target:
        call["operation"] = target.rsplit(".", 1)[-1] or "unknown"
        if target.startswith(ACM_TARGET_PREFIX):
            call["service"] = "acm"
            call["is_acm"] = True
        elif target.startswith(PCA_TARGET_PREFIX):
            call["service"] = "acm-pca"
        try:
            doc = json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError):
            doc = None
        if isinstance(doc, dict):
            for field, key in (("CertificateArn", "arn"), ("CertificateAuthorityArn", "ca_arn"), ("IdempotencyToken", "token")):
                if isinstance(doc.get(field), str):
                    call[key] = doc[field]
        return call
    # Query/form protocol (STS and friends): Action=... in the body or the URL.
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8")) if body else {}
    except UnicodeDecodeError:
        form = {}
    try:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    except ValueError:
        query = {}
    action = form.get("Action") or query.get("Action")
    if action:
        call["operation"] = action[0]
    scope = _sigv4_service(headers, query)
    if scope == "sts" or (scope is None and action and action[0] in STS_ACTIONS):
        call["service"] = "sts"
    return call


def classify(headers, body):
    """Return (operation, is_acm, arn) for an AWS request."""
    call = classify_call(headers, body)
    return call["operation"], call["is_acm"], call["arn"]


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
            call = classify_call(self.headers, body, self.path)
            entry = {
                "operation": call["operation"],
                "service": call["service"],
                "status": None,
                "injected": None,
                "at": time.time(),
                "arn": call["arn"],
                "ca_arn": call["ca_arn"],
                "token": call["token"],
                "quota_wait": False,  # reserved
            }
            status, headers, out = self._proxy(body, call, entry)
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

    def _proxy(self, body, call, entry):
        """Forward (or not) one AWS call; return (status, headers, body) for the client."""
        operation = call["operation"]
        service = call["service"]
        is_acm = call["is_acm"]
        injected = self.state.decide_before(operation, is_acm)
        if injected in ("throttle", "rate_limit"):
            entry["injected"] = injected
            return throttle_answer()

        # Idempotency: replay a cached answer, wait for an in-flight twin, or own the key.
        key = slot = None
        ttl = IDEMPOTENT_OPERATIONS.get((service, operation))
        if ttl is not None and call["token"] is not None:
            key = (service, operation, call["ca_arn"], call["token"])
            deadline = time.monotonic() + IDEMPOTENT_WAIT_SECONDS
            while True:
                kind, value = self.state.idempotency_claim(key, ttl)
                if kind == "replay":
                    entry["injected"] = "idempotent_replay"
                    status, headers, out = value
                    return status, list(headers), out
                if kind == "owner":
                    slot = value
                    break
                if kind == "forward":
                    break
                # kind == "wait": the twin sets the event once its upstream answer is in;
                # then loop to replay it, or (if it was not a 200) to try afresh.
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not value.event.wait(remaining):
                    entry["injected"] = "idempotent_wait_timeout"
                    return aws_error(500, "InternalFailure", "injected: idempotent call still in flight")

        try:
            injected = self.state.take_drop(operation, service)
            self.state.count_forward(operation, service)
            status, headers, out = self._forward(body)
        except BaseException:
            if slot is not None:
                self.state.idempotency_finish(key, slot, None)
            raise
        if slot is not None:
            answer = (status, list(headers), out) if status == 200 else None
            self.state.idempotency_finish(key, slot, answer)

        # The effect happened upstream; a client that gives up meanwhile never learns of it.
        hold = self.state.hold_seconds(operation, service)
        if hold > 0:
            time.sleep(hold)

        if injected == "drop_response":
            # The call happened upstream; the client never learns about it.
            entry["injected"] = injected
            return aws_error(500, "InternalFailure", "injected: response lost")

        if is_acm and operation == "DescribeCertificate" and status == 200 and self.state.wrong_serial_enabled():
            rewritten = rewrite_serial(out)
            if rewritten is not None:
                entry["injected"] = "wrong_serial"
                out = rewritten
        if hold > 0 and entry["injected"] is None:
            entry["injected"] = "held"
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
        elif name == "stats" and method == "GET":
            self._send_json(200, self.state.get_stats())
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
        elif name in ("health", "log", "stats", "reset-log", "config"):
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
