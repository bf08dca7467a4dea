"""The bare ceiling: uvicorn + httptools + Starlette doing the tiny model's matmul in the request itself."""

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.handlers.tiny_handler import answer


async def predict(request: Request) -> Response:
    rows = orjson.loads(await request.body())
    return Response(orjson.dumps(answer(rows)), media_type="application/json")


app = Starlette(routes=[Route("/predictions/tiny", predict, methods=["POST"])])
