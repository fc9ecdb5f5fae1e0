"""A read-only HTTP gateway to a private bucket, standing in for CloudFront with origin access
control: the browser sends plain GETs, the gateway reads the objects with signed S3 requests."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import boto3
from botocore.exceptions import ClientError


class S3Gateway:
    def __init__(self, bucket: str) -> None:
        client = boto3.client("s3")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                key = unquote(urlparse(self.path).path).lstrip("/")
                try:
                    obj = client.get_object(Bucket=bucket, Key=key)
                except ClientError:
                    self.send_error(404)
                    return
                body = obj["Body"].read()
                self.send_response(200)
                self.send_header("Content-Type", obj["ContentType"])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> S3Gateway:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
