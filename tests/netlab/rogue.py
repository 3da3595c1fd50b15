"""A rogue LAN host for tests/netlab.rs: it claims other nodes' ids.

For each NODE_ID:PORT it announces `_loopsy._tcp` over mDNS at ADDRESS:PORT with that node id
(as a 1.0.21 node would announce itself), and answers GET /api/v1/health there with it, like a
daemon. Every byte any client sends it (HTTP requests, TLS handshakes) is appended to RECORD, so
the test can prove that no key ever reached it.

usage: rogue.py RECORD ADDRESS NODE_ID:PORT...
Prints "ready" once registered; on SIGTERM unregisters and exits.
"""
import json
import signal
import socket
import sys
import threading

from zeroconf import IPVersion, ServiceInfo, Zeroconf

record, address = sys.argv[1], sys.argv[2]
claims = [(claim.split(":")[0], int(claim.split(":")[1])) for claim in sys.argv[3:]]
lock = threading.Lock()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())


def received(data):
    with lock, open(record, "ab") as f:
        f.write(data + b"\n")


def handle(conn, node_id):
    conn.settimeout(3)
    data = b""
    try:
        while b"\r\n\r\n" not in data and len(data) < 1 << 20:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = min(int(value.strip() or 0), 1 << 20)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
            data += chunk
    except (socket.timeout, OSError, ValueError):
        pass
    received(data)
    try:
        if data.startswith(b"GET /api/v1/health "):
            answer = json.dumps({"status": "ok", "nodeId": node_id, "uptime": 1, "version": "1.0.21"}).encode()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % len(answer)
                + answer
            )
        elif data[:1].isalpha():
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    except OSError:
        pass
    conn.close()


def serve(node_id, port):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port))
    server.listen(64)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=handle, args=(conn, node_id), daemon=True).start()


for node_id, port in claims:
    threading.Thread(target=serve, args=(node_id, port), daemon=True).start()

zc = Zeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
service = "_loopsy._tcp.local."
infos = []
for i, (node_id, port) in enumerate(claims):
    info = ServiceInfo(
        service,
        f"rogue-{i}.{service}",
        addresses=[socket.inet_aton(address)],
        port=port,
        properties={"nodeId": node_id, "version": "1.0.21", "platform": "linux", "capabilities": "execute"},
        server=socket.gethostname() + ".local.",
    )
    zc.register_service(info, allow_name_change=True)
    infos.append(info)
print("ready", flush=True)
stop.wait()
for info in infos:
    zc.unregister_service(info)
zc.close()
