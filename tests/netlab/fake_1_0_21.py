"""A stand-in for a loopsy 1.0.21 node, for tests/netlab.rs.

It advertises itself the way 1.0.21 does (a standard mDNS stack; SRV target = the OS hostname
without `.local`; the A record on that host name; the four TXT keys of PROTOCOL.md §5.1) with
python-zeroconf, and answers GET /api/v1/health like 1.0.21 so a probe can confirm it.

usage: fake_1_0_21.py NODE_ID ADDRESS PORT
Prints "ready" once registered; on SIGTERM unregisters (TTL-0 goodbye) and exits.
"""
import json
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from zeroconf import IPVersion, ServiceInfo, Zeroconf

node_id, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
started = time.monotonic()
# Before anything is announced: register_service() returns only after its announcements, and
# a browser may act on the first one, so a SIGTERM can come while it is still running.
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())


class Health(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # as 1.0.21 (Fastify) answers; HTTP/1.0 is not spoken by peers

    def do_GET(self):
        if self.path != "/api/v1/health":
            self.send_error(404)
            return
        uptime = int((time.monotonic() - started) * 1000)
        body = json.dumps({"status": "ok", "nodeId": node_id, "uptime": uptime, "version": "1.0.21"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer((address, port), Health)
threading.Thread(target=server.serve_forever, daemon=True).start()

service = "_loopsy._tcp.local."
info = ServiceInfo(
    service,
    f"loopsy-{node_id[:8]}.{service}",
    addresses=[socket.inet_aton(address)],
    port=port,
    properties={
        "nodeId": node_id,
        "version": "1.0.21",
        "platform": "linux",
        "capabilities": "execute,transfer,context,ai-tasks",
    },
    server=socket.gethostname() + ".",  # 1.0.21: the bare OS hostname, no ".local"
)
zc = Zeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
zc.register_service(info, allow_name_change=False)
print("ready", flush=True)
stop.wait()
server.shutdown()  # stop answering first, as a stopping daemon does, then say goodbye
server.server_close()
zc.unregister_service(info)
zc.close()
