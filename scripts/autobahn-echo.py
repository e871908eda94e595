"""A WebSocket echo server for scripts/autobahn: every message back as it
came (text as text, binary as binary), no size limit, permessage-deflate
offered as the library does by default. Prints `ready` once listening.

Usage: python autobahn-echo.py PORT
"""

import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def main(port):
    async with serve(echo, "127.0.0.1", port, max_size=None, max_queue=None) as server:
        print("ready", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
