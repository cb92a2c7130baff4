#!/usr/bin/env python3
"""An OTLP/HTTP logs receiver for oomwatch's tests.

Decodes every request with the official OpenTelemetry definitions (the
opentelemetry-proto package: protobuf for application/x-protobuf,
protobuf's JSON mapping for application/json, unknown fields refused) and
appends what it got, one JSON object per request, to --out.

--responses scripts the answers to the first requests, in order; after the
script every request gets 200. Items, comma-separated:
  200            success (an ExportLogsServiceResponse in the request's encoding)
  partial:N      success with partial_success.rejected_log_records = N
  503, 429, 400  that status (any number); 503:2 adds "Retry-After: 2"
  close          read the request, then close the connection without answering

Prints "listening PORT" on stdout once it accepts connections. --port
listens on a given port (a receiver started again after an outage).
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class Script:
    def __init__(self, items):
        self.items = list(items)
        self.lock = threading.Lock()
        self.count = 0

    def next(self):
        with self.lock:
            self.count += 1
            return self.count, (self.items.pop(0) if self.items else "200")


def decode(content_type, body):
    """(encoding, message dict, unknown-field bytes) or raises."""
    request = ExportLogsServiceRequest()
    if content_type == PROTOBUF:
        request.ParseFromString(body)
        size = len(body)
        # Fields the official definitions do not know stay in the message
        # as unknown fields; without them it serializes shorter.
        request.DiscardUnknownFields()
        unknown = size - request.ByteSize()
        encoding = "protobuf"
    elif content_type == JSON:
        json_format.Parse(body.decode("utf-8"), request, ignore_unknown_fields=False)
        unknown = 0
        encoding = "json"
    else:
        raise ValueError(f"unsupported content type {content_type!r}")
    as_dict = json_format.MessageToDict(request, preserving_proto_field_name=True)
    return encoding, as_dict, unknown


def make_handler(script, out, lock):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            number, action = script.next()
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            record = {
                "n": number,
                "path": self.path,
                "content_type": content_type,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "answer": action,
                "length": length,
                "received_unix_nano": time.time_ns(),
            }
            try:
                record["encoding"], record["request"], record["unknown_field_bytes"] = decode(content_type, body)
            except Exception as e:  # what was wrong goes to the test
                record["decode_error"] = f"{type(e).__name__}: {e}"
            with lock:
                out.write(json.dumps(record) + "\n")
                out.flush()

            if action == "close":
                self.close_connection = True
                return
            if "decode_error" in record and action.split(":")[0] in ("200", "partial"):
                return self.answer(400, "text/plain", record["decode_error"].encode())
            kind, _, arg = action.partition(":")
            if kind in ("200", "partial"):
                response = ExportLogsServiceResponse()
                if kind == "partial":
                    response.partial_success.rejected_log_records = int(arg)
                    response.partial_success.error_message = "rejected by the test receiver"
                if content_type == JSON:
                    payload = json_format.MessageToJson(response).encode()
                else:
                    payload = response.SerializeToString()
                return self.answer(200, content_type or PROTOBUF, payload)
            headers = {"Retry-After": arg} if arg else {}
            return self.answer(int(kind), "text/plain", f"scripted {kind}\n".encode(), headers)

        def answer(self, status, content_type, payload, headers=None):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--responses", default="")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args()
    script = Script(item.strip() for item in args.responses.split(",") if item.strip())
    with open(args.out, "a", encoding="utf-8") as out:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(script, out, threading.Lock()))
        print(f"listening {server.server_address[1]}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
