"""Browses _loopsy._tcp with python-zeroconf (a standard mDNS stack) and reports what it sees,
for tests/netlab.rs: our announcer checked by someone else's browser.

usage: zeroconf_browse.py ADDRESS SECONDS
Prints one JSON line per event, flushed: {"event": "added", "name", "server", "port",
"addresses", "properties"} once a service resolves, {"event": "removed", "name"} when it goes
(a goodbye, or its records expiring). Exits 0 after SECONDS, or at once on SIGTERM.
"""
import json
import queue
import signal
import socket
import sys
import time

from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

address, seconds = sys.argv[1], float(sys.argv[2])
SERVICE = "_loopsy._tcp.local."
events = queue.Queue()
signal.signal(signal.SIGTERM, lambda *_: events.put(("stop", None)))


def on_change(zeroconf, service_type, name, state_change):
    # Resolving blocks, which the browser's own thread must not do: hand it to the main loop.
    events.put((state_change, name))


def say(obj):
    print(json.dumps(obj), flush=True)


zc = Zeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
browser = ServiceBrowser(zc, SERVICE, handlers=[on_change])
deadline = time.monotonic() + seconds
try:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            change, name = events.get(timeout=left)
        except queue.Empty:
            break
        if change == "stop":
            break
        if change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            info = zc.get_service_info(SERVICE, name, timeout=3000)
            if info is None:
                say({"event": "unresolved", "name": name})
                continue
            say({
                "event": "added",
                "name": name,
                "server": info.server,
                "port": info.port,
                "addresses": [socket.inet_ntoa(a) for a in info.addresses if len(a) == 4],
                "properties": {
                    k.decode(): (v.decode() if v is not None else None) for k, v in info.properties.items()
                },
            })
        elif change == ServiceStateChange.Removed:
            say({"event": "removed", "name": name})
finally:
    browser.cancel()
    zc.close()
