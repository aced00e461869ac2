"""Baselines measured in the same run as the pipeline, on the same HTTP stack.

- `discard`: reads the body and answers a constant: the load generator's own ceiling.
- `parse`: reads, decodes and validates exactly as `/ingest` does, then drops the events: the
  ceiling of HTTP + parsing, against which the whole pipeline is reported as a ratio.

    python -m bench.baseline {discard|parse} --port PORT
"""

from __future__ import annotations

import argparse
import time

import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

from streamscore.api.responses import json_response
from streamscore.ingest.decode import EventDecoder
from streamscore.ingest.request import Tally
from streamscore.ingest.validate import validate


def create_app(mode: str) -> FastAPI:
    app = FastAPI()
    decoder = EventDecoder(3)

    @app.get("/health")
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.post("/ingest")
    async def ingest(request: Request) -> Response:
        body = await request.body()
        tally = Tally()
        if mode == "parse":
            if request.headers.get("content-type", "").startswith("application/x-ndjson"):
                lines = [line for line in body.split(b"\n") if line.strip()]
                batch, rejections = decoder.decode_lines(list(enumerate(lines)))
            else:
                batch, rejections = decoder.decode_json(body)
            batch, invalid = validate(batch, time.time(), 300.0)
            tally.rejected = len(rejections) + len(invalid)
            tally.processed = len(batch)
        return json_response(tally.body())

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["discard", "parse"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.mode),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
