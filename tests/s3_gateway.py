"""A read-only HTTP gateway to a private bucket, standing in for the template's CloudFront
distribution with origin access control: the browser sends plain GETs, the gateway reads the
objects with signed S3 requests, routed as the distribution routes them (each cache behavior's
path pattern and its origin's path) and only where the bucket policy lets CloudFront read."""

from __future__ import annotations

import fnmatch
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import boto3
import yaml
from botocore.exceptions import ClientError

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "facegan.yaml"


def cloudfront_routes(template: dict) -> tuple[list[tuple[str, str]], list[str]]:
    """([(path pattern, origin path)] of the distribution's cache behaviors, the default last as
    "*"; [key patterns] the bucket policy lets CloudFront read), from the template."""
    config = template["Resources"]["GalleryDistribution"]["Properties"]["DistributionConfig"]
    origin_path = {o["Id"]: o.get("OriginPath", "").strip("/") for o in config["Origins"]}
    behaviors = [(b["PathPattern"], origin_path[b["TargetOriginId"]]) for b in config.get("CacheBehaviors", [])]
    behaviors.append(("*", origin_path[config["DefaultCacheBehavior"]["TargetOriginId"]]))
    statements = template["Resources"]["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    [grant] = [st["Fn::If"][1] for st in statements  # the CDN's statement: only with EnableCloudFront
               if "Fn::If" in st and st["Fn::If"][1]["Principal"] == {"Service": "cloudfront.amazonaws.com"}]
    resources = grant["Resource"] if isinstance(grant["Resource"], list) else [grant["Resource"]]
    readable = [r["Fn::Sub"].removeprefix("${Bucket.Arn}/") for r in resources]
    return behaviors, readable


class S3Gateway:
    def __init__(self, bucket: str) -> None:
        client = boto3.client("s3")
        template = yaml.safe_load(TEMPLATE.read_text())
        behaviors, readable = cloudfront_routes(template)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = unquote(urlparse(self.path).path).lstrip("/")
                origin = next(o for pattern, o in behaviors if fnmatch.fnmatchcase(path, pattern))
                key = f"{origin}/{path}" if origin else path
                if not any(fnmatch.fnmatchcase(key, pattern) for pattern in readable):
                    self.send_error(403)  # the bucket policy does not let CloudFront read it
                    return
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
        gallery = template["Outputs"]["GalleryUrl"]["Value"]["Fn::Sub"]
        self.gallery = self.url + gallery.removeprefix("https://${GalleryDistribution.DomainName}")  # its index
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> S3Gateway:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
