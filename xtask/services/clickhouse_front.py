"""A small server that speaks the ClickHouse HTTP interface over a pool of in-process chDB sessions.

Started by `cargo xtask services up`; chDB is the ClickHouse 26.9 engine without a server. What it
implements of https://clickhouse.com/docs/interfaces/http :

- GET /ping and GET / -> "Ok.\n"
- the query in the `query` URL parameter and/or the body (for INSERT, the body is the data), or in a
  multipart/form-data body (`query` and `param_*` fields, as clickhouse-rs sends them)
- `database`, `default_format`, `param_*` (typed, bound by the engine, never spliced into SQL),
  other ClickHouse settings as URL parameters (applied for this query only: an INSERT with a body
  gets them in its own SETTINGS clause, any other query a SET before and a reset after)
- user/password via X-ClickHouse-User/X-ClickHouse-Key, HTTP basic auth or `user`/`password`
  parameters; a wrong one is refused with code 516
- INSERT with a body in any input format (RowBinary, Native, JSONEachRow, TSV, ...), fed to chDB with
  INSERT ... FROM INFILE
- request bodies compressed with ClickHouse's native block framing (`decompress=1`: CityHash128
  checksum, LZ4 or none) or with Content-Encoding lz4/gzip/deflate/zstd
- responses compressed with `compress=1` (native framing, LZ4) or Accept-Encoding lz4/gzip
- errors: HTTP 4xx/5xx, X-ClickHouse-Exception-Code, body "Code: N. DB::Exception: ..."
- queries from several connections at once, as a server runs them: `--sessions` chDB sessions
  (default 4) share the data path, each query takes an idle one (the rest wait)
"""

import argparse
import base64
import gzip
import json
import os
import queue
import re
import struct
import sys
import tempfile
import time
import traceback
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import lz4.block
import lz4.frame
from chdb import session as chdb_session
from clickhouse_cityhash.cityhash import CityHash128

# URL parameters of the HTTP interface that are not ClickHouse settings.
HTTP_ONLY = {
    "query", "database", "default_format", "user", "password", "compress", "decompress",
    "session_id", "session_timeout", "session_check", "query_id", "quota_key", "buffer_size",
    "wait_end_of_query", "role", "client_protocol_version", "enable_http_compression",
    "http_zlib_compression_level", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "http_wait_end_of_query", "http_response_buffer_size", "cancel_http_readonly_queries_on_client_close",
    "max_result_rows", "result_overflow_mode", "extremes", "readonly",
}

INSERT_RE = re.compile(
    r"^\s*(?P<head>INSERT\s+INTO\s+.+?)\s+FORMAT\s+(?P<fmt>[A-Za-z0-9_]+)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
HAS_FORMAT_RE = re.compile(r"\bFORMAT\s+[A-Za-z0-9_]+\s*;?\s*$", re.IGNORECASE)
# An INSERT whose data follows in the same body: "INSERT INTO t (...) FORMAT Native\n<data>".
INLINE_INSERT_RE = re.compile(
    rb"^\s*(INSERT\s+INTO\s+.+?\s+FORMAT\s+[A-Za-z0-9_]+)[ \t]*(?:\r?\n|[ \t])",
    re.IGNORECASE | re.DOTALL,
)
# "INSERT INTO t [(cols)] [SETTINGS a = 1, ...]": FROM INFILE goes before the SETTINGS clause.
INSERT_SETTINGS_RE = re.compile(
    r"^(?P<target>.+?)\s+SETTINGS\s+(?P<settings>.+)$", re.IGNORECASE | re.DOTALL
)
CODE_RE = re.compile(r"Code:\s*(\d+)")
SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ChError(Exception):
    def __init__(self, code, message, status=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def http_status(code):
    if code == 516:
        return 403
    if code in (60, 81):  # UNKNOWN_TABLE, UNKNOWN_DATABASE
        return 404
    if code in (62, 27, 36, 26, 115, 47, 46, 53, 43, 6, 69, 70):  # syntax, parse, bad args
        return 400
    return 500


def checksum128(block):
    """ClickHouse's block checksum: CityHash128 v1.0.2, its first 64-bit half first (both little
    endian), as the server and clickhouse-rs write it (clickhouse_cityhash returns the halves
    the other way round in one integer)."""
    h = CityHash128(block)
    return struct.pack("<QQ", h >> 64, h & 0xFFFFFFFFFFFFFFFF)


class FrameDecoder:
    """Decompresses ClickHouse's native block framing as it arrives, checking every checksum:
    `feed` takes any slice of the body, `finish` returns the blocks' payloads as a list (written
    out one by one: no joined copy of the whole body). An INSERT's chunks are fed while they
    arrive, as the server decompresses while it reads, so the work does not wait for the body's
    end."""

    def __init__(self):
        self.pending = bytearray()
        self.out = []
        self.failed = None

    def feed(self, data):
        if self.failed:
            return  # the error is raised by finish, after the body has been read
        self.pending += data
        pos = 0
        try:
            with memoryview(self.pending) as view:
                while len(view) - pos >= 25:
                    csize = struct.unpack_from("<I", view, pos + 17)[0]
                    if len(view) - pos < 16 + csize:
                        break
                    self.out.append(self.block(view[pos:pos + 16 + csize]))
                    pos += 16 + csize
        except ChError as e:
            self.failed = e.with_traceback(None)
            self.pending = bytearray()  # a new buffer: views of the old one may still be alive
            return
        del self.pending[:pos]

    @staticmethod
    def block(frame):
        checksum = bytes(frame[:16])
        # A copy: clickhouse_cityhash keeps an export of any buffer it hashes, which would pin
        # the pending bytearray (and its memoryview) for good.
        block = bytes(frame[16:])
        method = block[0]
        csize, usize = struct.unpack_from("<II", block, 1)
        if csize < 9:
            raise ChError(432, "Code: 432. DB::Exception: bad compressed block size. (UNKNOWN_CODEC)")
        if checksum != checksum128(block):
            raise ChError(40, "Code: 40. DB::Exception: Checksum doesn't match: corrupted data. (CHECKSUM_DOESNT_MATCH)")
        payload = block[9:]
        if method == 0x82:
            return lz4.block.decompress(payload, uncompressed_size=usize)
        if method == 0x02:
            return payload
        raise ChError(89, f"Code: 89. DB::Exception: Unknown compression method {method:#x}. (UNKNOWN_COMPRESSION_METHOD)")

    def finish(self):
        if self.failed:
            raise self.failed
        if self.pending:
            raise ChError(432, "Code: 432. DB::Exception: truncated compressed block. (UNKNOWN_CODEC)")
        return self.out


def decode_native_frames(data):
    """The payloads of a whole body in native block framing (see FrameDecoder)."""
    d = FrameDecoder()
    d.feed(data)
    return d.finish()


def encode_native_frames(data, block=1 << 20):
    out = bytearray()
    for i in range(0, max(len(data), 1), block):
        chunk = data[i:i + block]
        comp = lz4.block.compress(chunk, store_size=False)
        body = bytes([0x82]) + struct.pack("<II", len(comp) + 9, len(chunk)) + comp
        out += checksum128(body) + body
    return bytes(out)


FORM_NAME_RE = re.compile(rb'name="([^"]*)"')


def parse_form(ctype, body):
    """The fields of a multipart/form-data body as (name, text) pairs. A plain split on the
    boundary: the email parser took seconds on the multi-megabyte parameter lists of batch id
    lookups."""
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        raise ChError(36, "Code: 36. DB::Exception: multipart body without a boundary. (BAD_ARGUMENTS)")
    delimiter = b"--" + m.group(1).encode()
    fields = []
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        name = FORM_NAME_RE.search(head)
        if value.endswith(b"\r\n"):
            value = value[:-2]
        fields.append((name.group(1).decode() if name else None, value.decode()))
    return fields


def decode_content(body, encoding):
    enc = (encoding or "").strip().lower()
    if not enc or enc == "identity":
        return body
    if enc == "gzip":
        return gzip.decompress(body)
    if enc == "deflate":
        return zlib.decompress(body)
    if enc == "lz4":
        return lz4.frame.decompress(body)
    if enc == "zstd":
        try:
            import zstandard
        except ImportError:
            raise ChError(89, "Code: 89. DB::Exception: zstd request bodies are not supported here. (UNKNOWN_COMPRESSION_METHOD)")
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    raise ChError(89, f"Code: 89. DB::Exception: Unknown Content-Encoding {enc}. (UNKNOWN_COMPRESSION_METHOD)")


class Slot:
    """One chDB session of the engine's pool and the database its `USE` last selected."""

    def __init__(self, session):
        self.session = session
        self.database = None


class Engine:
    """A pool of chDB sessions over one data path: like a server, the engine runs queries from
    several connections at once (two INSERTs use two cores). Each query takes an idle session for
    its duration; a session's `USE` and `SET`s are its own, and a query's settings are reset before
    the session goes back. `sessions` bounds the queries running at once (the rest wait)."""

    def __init__(self, path, tmpdir, sessions=4):
        if sessions < 1:
            raise ValueError("--sessions must be at least 1")
        self.idle = queue.LifoQueue()
        for _ in range(sessions):
            self.idle.put(Slot(chdb_session.Session(path)))
        # Insert bodies are handed to the engine as files: in memory (/dev/shm) where there is one.
        shm = "/dev/shm"
        self.tmpdir = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tmpdir

    def run(self, sql, fmt, database, params, settings, data):
        slot = self.idle.get()
        try:
            return self.run_on(slot, sql, fmt, database, params, settings, data)
        finally:
            self.idle.put(slot)

    def run_on(self, slot, sql, fmt, database, params, settings, data):
        session = slot.session
        wanted = database or "default"
        if wanted != slot.database:
            slot.database = None
            session.query(f"USE `{wanted}`")
            slot.database = wanted
        applied = []
        try:
            clauses = []
            for name, value in settings:
                if not SETTING_NAME_RE.match(name):
                    raise ChError(115, f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)")
                literal = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
                if data is not None:
                    # An INSERT takes them in its own SETTINGS clause: no SET and reset around it.
                    clauses.append(f"{name} = {literal}")
                    continue
                session.query(f"SET {name} = {literal}")
                applied.append(name)
            path = None
            if data is not None:
                fd, path = tempfile.mkstemp(dir=self.tmpdir, suffix=".data")
                with os.fdopen(fd, "wb") as f:
                    # One body, or the payloads of its compressed blocks in order.
                    for part in data if isinstance(data, list) else [data]:
                        f.write(part)
                m = INSERT_RE.match(sql)
                head = m.group("head")
                inline = INSERT_SETTINGS_RE.match(head)
                if inline:
                    # The query's own SETTINGS clause, then the URL's (which win).
                    head = inline.group("target")
                    clauses.insert(0, inline.group("settings"))
                with_settings = f" SETTINGS {', '.join(clauses)}" if clauses else ""
                sql = f"{head} FROM INFILE '{path}'{with_settings} FORMAT {m.group('fmt')}"
            if re.match(r"\s*USE\b", sql, re.IGNORECASE):
                slot.database = None  # the client switched databases itself
            try:
                kwargs = {"params": params} if params else {}
                result = session.query(sql, fmt, **kwargs)
            finally:
                if path:
                    os.unlink(path)
            out = bytes(result.bytes())
            try:
                rows, nbytes = int(result.rows_read()), int(result.bytes_read())
            except Exception:
                rows, nbytes = 0, 0
            return out, rows, nbytes
        finally:
            for name in applied:
                try:
                    session.query(f"SET {name} = DEFAULT")
                except Exception:
                    pass


def make_handler(engine, user, password):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "sprintlens-clickhouse-front"
        # Headers and body go out as separate writes: without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every response.
        disable_nagle_algorithm = True

        def log_message(self, fmt, *args):
            sys.stderr.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))

        def send(self, status, body, headers=None):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def fail(self, err, accept):
            status = err.status or http_status(err.code)
            body = (err.message.rstrip() + "\n").encode()
            headers = {"X-ClickHouse-Exception-Code": str(err.code), "Content-Type": "text/plain; charset=UTF-8"}
            self.send(status, body, headers)

        def do_GET(self):
            self.handle_query(b"")

        def streamed_insert(self):
            """Whether this request's body is an INSERT's data in native compressed blocks, which
            is decompressed while it is read."""
            q = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
            enc = (self.headers.get("Content-Encoding") or "identity").strip().lower()
            return (q.get("decompress") == "1" and enc == "identity"
                    and INSERT_RE.match(q.get("query") or "") is not None)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                decoder = FrameDecoder() if self.streamed_insert() else None
                body = bytearray()
                try:
                    while True:
                        line = self.rfile.readline(1024)
                        size = int(line.strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        chunk = self.rfile.read(size)
                        if len(chunk) != size or self.rfile.readline() != b"\r\n":
                            raise ValueError("chunk cut short")
                        if decoder:
                            decoder.feed(chunk)
                        else:
                            body += chunk
                except (ValueError, OSError):
                    # The client went away (or aborted) mid-body: an unended INSERT is never run.
                    self.close_connection = True
                    return
                if decoder:
                    try:
                        body = decoder.finish()
                    except ChError as e:
                        self.fail(e, self.headers.get("Accept-Encoding", ""))
                        return
                else:
                    body = bytes(body)
            else:
                body = self.rfile.read(length) if length else b""
                if len(body) != length:
                    # The client went away mid-body: never run (and never insert) a truncated
                    # body. A retry carrying the same deduplication token would be dropped as a
                    # duplicate of the partial insert.
                    self.close_connection = True
                    return
            self.handle_query(body)

        def handle_query(self, body):
            url = urlsplit(self.path)
            if url.path in ("/ping", "/") and self.command == "GET" and not url.query:
                self.send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                return
            if url.path not in ("/", ""):
                self.send(404, b"There is no handle " + url.path.encode() + b"\n")
                return
            accept = self.headers.get("Accept-Encoding", "")
            try:
                pairs = parse_qsl(url.query, keep_blank_values=True)
                q = {}
                for k, v in pairs:
                    q[k] = v
                self.authenticate(q)
                ctype = self.headers.get("Content-Type", "")
                query = q.get("query")
                params = {k[6:]: v for k, v in pairs if k.startswith("param_")}
                if ctype.startswith("multipart/form-data"):
                    for name, value in parse_form(ctype, body):
                        if name == "query":
                            query = value if query is None else query + "\n" + value
                        elif name and name.startswith("param_"):
                            params[name[6:]] = value
                    body = b""
                elif isinstance(body, list):
                    pass  # an INSERT's blocks, decompressed while they arrived
                else:
                    body = decode_content(body, self.headers.get("Content-Encoding"))
                    if q.get("decompress") == "1" and body:
                        frames = decode_native_frames(body)
                        # An INSERT's data stays in its blocks (written out one by one).
                        insert = query is not None and INSERT_RE.match(query)
                        body = frames if insert else b"".join(frames)
                for name in params:
                    if not PARAM_NAME_RE.match(name):
                        raise ChError(36, f"Code: 36. DB::Exception: Invalid parameter name '{name}'. (BAD_ARGUMENTS)")
                data = None
                inline = INLINE_INSERT_RE.match(body) if query is None else None
                if inline and len(body) > inline.end():
                    sql, data = inline.group(1).decode(), body[inline.end():]
                elif query is None:
                    sql = body.decode()
                elif body and INSERT_RE.match(query):
                    sql, data = query, body
                else:
                    sql = query + ("\n" + body.decode() if body else "")
                if not sql.strip():
                    raise ChError(62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
                fmt = q.get("default_format") or "TabSeparated"
                settings = [(k, v) for k, v in pairs if k not in HTTP_ONLY and not k.startswith("param_")]
                database = q.get("database") or self.headers.get("X-ClickHouse-Database") or ""
                started = time.time()
                try:
                    out, rows, nbytes = engine.run(sql, fmt, database, params, settings, data)
                except ChError:
                    raise
                except Exception as e:  # chDB raises ChdbError carrying "Code: N. DB::Exception: ..."
                    text = str(e)
                    m = CODE_RE.search(text)
                    code = int(m.group(1)) if m else 1000
                    if not text.startswith("Code:"):
                        text = f"Code: {code}. DB::Exception: {text}"
                    raise ChError(code, text)
                m = HAS_FORMAT_RE.search(sql)
                out_fmt = sql[m.start():].split()[1].rstrip(";") if m else fmt
                headers = {
                    "Content-Type": "text/plain; charset=UTF-8" if out_fmt.startswith(("TabSeparated", "TSV", "CSV")) else "application/octet-stream",
                    "X-ClickHouse-Format": out_fmt,
                    "X-ClickHouse-Query-Id": q.get("query_id") or str(uuid.uuid4()),
                    "X-ClickHouse-Timezone": "UTC",
                    "X-ClickHouse-Server-Display-Name": "sprintlens-chdb",
                    "X-ClickHouse-Summary": json.dumps({
                        "read_rows": str(rows), "read_bytes": str(nbytes), "written_rows": "0",
                        "written_bytes": "0", "total_rows_to_read": str(rows), "result_rows": "0",
                        "result_bytes": str(len(out)), "elapsed_ns": str(int((time.time() - started) * 1e9)),
                    }),
                }
                if q.get("compress") == "1":
                    out = encode_native_frames(out)
                elif "lz4" in accept.lower():
                    out = lz4.frame.compress(out)
                    headers["Content-Encoding"] = "lz4"
                elif "gzip" in accept.lower():
                    out = gzip.compress(out)
                    headers["Content-Encoding"] = "gzip"
                self.send(200, out, headers)
            except ChError as e:
                self.fail(e, accept)
            except Exception as e:
                traceback.print_exc()
                self.fail(ChError(1001, f"Code: 1001. DB::Exception: {type(e).__name__}: {e}. (STD_EXCEPTION)"), accept)

        def authenticate(self, q):
            u = self.headers.get("X-ClickHouse-User")
            p = self.headers.get("X-ClickHouse-Key")
            auth = self.headers.get("Authorization", "")
            if auth.lower().startswith("basic "):
                try:
                    u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                except Exception:
                    u, p = None, None
            u = u if u is not None else q.get("user", "default")
            p = p if p is not None else q.get("password", "")
            if u != user or p != password:
                raise ChError(516, f"Code: 516. DB::Exception: {u}: Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)")

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--database", default="sprintlens")
    ap.add_argument("--sessions", type=int, default=4,
                    help="chDB sessions, the queries that run at once (more wait for one)")
    args = ap.parse_args()
    os.makedirs(args.data, exist_ok=True)
    tmp = os.path.join(args.data, "tmp")
    os.makedirs(tmp, exist_ok=True)
    engine = Engine(os.path.join(args.data, "chdb"), tmp, args.sessions)
    engine.run(f"CREATE DATABASE IF NOT EXISTS `{args.database}`", "TSV", "", {}, [], None)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(engine, args.user, args.password))
    server.daemon_threads = True
    sys.stderr.write(f"clickhouse front on http://{args.host}:{args.port} (chDB at {args.data})\n")
    sys.stderr.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
