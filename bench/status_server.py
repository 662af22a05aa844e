"""A canned batch-status server for the trigger bench: raw asyncio HTTP/1.1 with keep-alive.

Every `GET …/batches/<id>` gets the same in-progress OpenAI batch object. It does next to no work per
request, so at thousands of polls per second the server is not what is measured. Run in its own
process: `python -m bench.status_server PORT_FILE`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path


def _body(batch_id: str) -> bytes:
    return json.dumps({
        "id": batch_id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
        "input_file_id": "file-in", "completion_window": "24h", "status": "in_progress",
        "output_file_id": None, "error_file_id": None, "created_at": 1764590000, "in_progress_at": 1764590001,
        "expires_at": 1764676400, "finalizing_at": None, "completed_at": None, "failed_at": None,
        "expired_at": None, "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": 10, "completed": 3, "failed": 0}, "metadata": {},
    }).encode()


class StatusProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            path = head.split(b" ", 2)[1].decode()
            body = _body(path.rstrip("/").rsplit("/", 1)[-1])
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nx-request-id: req_bench\r\n\r\n%s" % (len(body), body))


async def serve(port_file: Path) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    server = await asyncio.get_running_loop().create_server(StatusProtocol, sock=sock, backlog=4096)
    port_file.write_text(str(sock.getsockname()[1]))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
