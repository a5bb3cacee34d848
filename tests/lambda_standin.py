"""A stand-in for AWS Lambda's Invoke API (moto cannot run functions without Docker): it
answers `POST /2015-03-31/functions/NAME/invocations` the way Lambda does for asynchronous
invocations, refusing a share of them as throttled (429, TooManyRequestsException), and runs
each accepted event through the real encoder handler, in this process, as one warm
execution environment.

    python tests/lambda_standin.py PORT --refuse 0.3 --log counts.json

It writes its counts (accepted, refused, warm, handled, failed records) to the --log file as
it goes.
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--refuse", type=float, default=0.3)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()

    from services.encoder.lambda_handler import handler

    counts = {"accepted": 0, "refused": 0, "warm": 0, "handled": 0, "failed_records": 0}
    lock = threading.Lock()
    events: queue.Queue[dict] = queue.Queue()

    def note(key: str) -> None:
        with lock:
            counts[key] += 1
            args.log.write_text(json.dumps(counts))

    class Invoke(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if "/invocations" not in self.path:
                self.send_response(404)
                self.end_headers()
                return
            if random.random() < args.refuse:
                note("refused")
                payload = json.dumps({"Type": "User", "message": "Rate Exceeded."}).encode()
                self.send_response(429)
                self.send_header("x-amzn-ErrorType", "TooManyRequestsException")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            note("accepted")
            events.put(json.loads(body))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return

    def environment() -> None:
        while True:
            event = events.get()
            if event.get("warm"):
                handler(event, None)
                note("warm")
                continue
            answer = handler(event, None)
            note("handled")
            for _ in answer.get("batchItemFailures", []):
                note("failed_records")

    threading.Thread(target=environment, daemon=True).start()
    ThreadingHTTPServer(("127.0.0.1", args.port), Invoke).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
