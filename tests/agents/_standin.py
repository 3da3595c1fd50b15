"""Shared parts of the stand-in agent CLIs used by tests/tasks.rs.

Each stand-in (claude, codex, gemini beside this file) speaks its real CLI's documented
protocol (../shared/docs/AGENT-CLIS.md) strictly: a wrong command line or a malformed answer
makes it fail loudly (stderr + exit code), so the daemon's side of the protocol is tested.
With STANDIN_CALL_LOG set, each start appends its argv to that file; with STANDIN_INIT_ERROR set,
the claude stand-in refuses the permission channel's initialize request.
What it does is chosen by words in the prompt:

  hello     answer with a text, then finish
  tool      ask permission to run `echo hi > out.txt`; on allow write out.txt in the cwd
  crash     print to stderr and exit 3 in the middle of the turn
  hang      start a grandchild `sleep 600` (same process group), report its pid, wait for
            ever; SIGTERM makes the stand-in exit 0 (a cancelled agent that "succeeds")
  stubborn  like hang, but SIGTERM is ignored (only SIGKILL stops it)
  env       report argv, environment, cwd and whether stdout is a terminal, as JSON text
  spam N    print N texts
"""

import json
import os
import signal
import subprocess
import sys
import time

# Every start is logged (argv as one JSON line) when STANDIN_CALL_LOG names a file, so a test
# can tell that no agent ran at all.
if os.environ.get("STANDIN_CALL_LOG"):
    with open(os.environ["STANDIN_CALL_LOG"], "a") as log:
        log.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\n")


def fail(message, code=2):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    sys.exit(code)


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read_message():
    """The next JSON line on stdin, or None at EOF."""
    while True:
        line = sys.stdin.readline()
        if not line:
            return None
        line = line.strip()
        if not line:
            continue
        try:
            return json.loads(line)
        except ValueError:
            fail("stand-in: stdin line is not JSON: %r" % line)


def words(prompt):
    return prompt.split()


def env_report():
    return json.dumps({
        "argv": sys.argv[1:],
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "stdoutTty": os.isatty(1),
        "stdinTty": os.isatty(0),
        "pgid": os.getpgid(0),
        "pid": os.getpid(),
    })


def hang(report, stubborn=False):
    """Starts a grandchild, reports its pid with `report(text)`, then waits to be stopped."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN if stubborn else (lambda *_: os._exit(0)))
    child = subprocess.Popen(["sleep", "600"])
    report("grandchild %d" % child.pid)
    while True:
        time.sleep(1)


def crash():
    sys.stderr.write("stand-in: about to crash\nfatal: the stand-in crashed on purpose\n")
    sys.stderr.flush()
    os._exit(3)


def spam_count(prompt):
    w = words(prompt)
    if "spam" in w and w.index("spam") + 1 < len(w):
        return int(w[w.index("spam") + 1])
    return 0


def write_out(cwd):
    with open(os.path.join(cwd, "out.txt"), "w") as f:
        f.write("hi\n")


class Rpc:
    """Newline-delimited JSON-RPC over stdio, as codex app-server and gemini --acp speak it."""

    def __init__(self, jsonrpc):
        self.jsonrpc = jsonrpc
        self.next_id = 0

    def _send(self, obj):
        if self.jsonrpc:
            obj = dict(obj, jsonrpc="2.0")
        send(obj)

    def result(self, id, result):
        self._send({"id": id, "result": result})

    def error(self, id, message):
        self._send({"id": id, "error": {"code": -32600, "message": message}})

    def notify(self, method, params):
        self._send({"method": method, "params": params})

    def request(self, method, params):
        """Sends a request to the client and returns its result (or fails on an error)."""
        id = self.next_id
        self.next_id += 1
        self._send({"id": id, "method": method, "params": params})
        while True:
            message = read_message()
            if message is None:
                fail("stand-in: stdin closed while waiting for the answer to %s" % method, 4)
            if "method" in message:
                fail("stand-in: request %s while waiting for the answer to %s" % (message["method"], method), 6)
            if message.get("id") == id:
                if "error" in message:
                    fail("stand-in: client answered %s with an error: %r" % (method, message["error"]), 5)
                return message.get("result")
            fail("stand-in: answer to an unknown id %r" % message.get("id"), 6)

    def serve(self, handlers):
        """Answers requests with handlers[method](params) until stdin closes."""
        while True:
            message = read_message()
            if message is None:
                sys.exit(0)
            method = message.get("method")
            if method is None:
                fail("stand-in: unexpected answer %r" % message, 6)
            handler = handlers.get(method)
            if "id" not in message:
                if handler:
                    handler(message.get("params"))
                continue
            if handler is None:
                self.error(message["id"], "unknown method " + method)
                continue
            handler(message.get("params"), message["id"])
