"""Proves the ClickHouse front is the real engine, through clickhouse-connect (a client we did not write):
a MergeTree table with a TTL, a materialized view with an AggregatingMergeTree target, typed parameters,
inserts (compressed and not) and a wrong password refused. Exits non-zero on any failure."""

import sys
import uuid
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.exceptions import DatabaseError

url = urlsplit(sys.argv[1])  # clickhouse://user:password@host:port/database
db = url.path.strip("/") or "default"
for compress in (False, "lz4"):
    client = clickhouse_connect.get_client(
        host=url.hostname, port=url.port, username=url.username, password=url.password,
        database=db, compress=compress,
    )
    version = client.server_version
    assert version.startswith("26."), version
    t = "smoke_" + uuid.uuid4().hex[:8]
    client.command(f"""CREATE TABLE {t} (ws String, at DateTime, model LowCardinality(String), cost UInt64)
        ENGINE = MergeTree PARTITION BY toYYYYMM(at) ORDER BY (ws, at) TTL at + INTERVAL 30 DAY""")
    client.command(f"""CREATE TABLE {t}_daily (ws String, day Date, calls AggregateFunction(count),
        cost AggregateFunction(sum, UInt64)) ENGINE = AggregatingMergeTree ORDER BY (ws, day)""")
    client.command(f"""CREATE MATERIALIZED VIEW {t}_mv TO {t}_daily AS SELECT ws, toDate(at) AS day,
        countState() AS calls, sumState(cost) AS cost FROM {t} GROUP BY ws, day""")
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0, tzinfo=None)
    old = now - datetime.timedelta(days=400)
    rows = [["a", now, "gpt-4o", 10], ["a", now, "gpt-4o-mini", 5], ["b", now, "gpt-4o", 7], ["a", old, "x", 1000]]
    client.insert(t, rows, column_names=["ws", "at", "model", "cost"])
    client.command(f"OPTIMIZE TABLE {t} FINAL")
    live = client.query(f"SELECT count() FROM {t}").result_rows[0][0]
    assert live == 3, f"TTL should have dropped the 400-day-old row, {live} rows left"
    agg = client.query(
        f"SELECT countMerge(calls), sumMerge(cost) FROM {t}_daily WHERE ws = {{ws:String}}",
        parameters={"ws": "a"},
    ).result_rows
    assert agg[0][0] == 3 and agg[0][1] == 1015, agg  # the view saw every insert, TTL aside
    engine = client.query(f"SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = '{t}'").result_rows
    assert engine == [("MergeTree",)], engine
    for obj in (f"{t}_mv", f"{t}_daily", t):
        client.command(f"DROP TABLE {obj}")
try:
    clickhouse_connect.get_client(host=url.hostname, port=url.port, username=url.username,
                                  password="wrong", database=db).query("SELECT 1")
    raise SystemExit("a wrong password was accepted")
except DatabaseError as e:
    assert "516" in str(e) or "Authentication" in str(e), e
# The wire forms clickhouse-rs uses: RowBinary inserts in native LZ4 framing with a CityHash128
# checksum (decompress=1), parameters in a multipart body, an LZ4-framed (Content-Encoding) response.
import base64, os, struct, urllib.request
import lz4.frame
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clickhouse_front import encode_native_frames

def post(params, body, headers=None):
    from urllib.parse import urlencode
    req = urllib.request.Request(f"http://{url.hostname}:{url.port}/?{urlencode(params)}", data=body, method="POST")
    req.add_header("X-ClickHouse-User", url.username)
    req.add_header("X-ClickHouse-Key", url.password)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()

t = "wire_" + uuid.uuid4().hex[:8]
assert post({"database": db}, f"CREATE TABLE {t} (id UInt32, name String) ENGINE = MergeTree ORDER BY id".encode())[0] == 200
rows = b"".join(struct.pack("<I", i) + bytes([len(f"n{i}")]) + f"n{i}".encode() for i in range(1000))
st, _, body = post({"database": db, "query": f"INSERT INTO {t}(id, name) FORMAT RowBinary", "decompress": "1"}, encode_native_frames(rows))
assert st == 200, body
bad = bytearray(encode_native_frames(rows)); bad[0] ^= 0xFF
st, hdr, body = post({"database": db, "query": f"INSERT INTO {t}(id, name) FORMAT RowBinary", "decompress": "1"}, bytes(bad))
assert st != 200 and hdr.get("X-ClickHouse-Exception-Code") == "40", (st, body)
boundary = "sprintlensboundary"
multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\n"
             f"SELECT count(), sum(id) FROM {t} WHERE id < {{lim:UInt32}} FORMAT RowBinaryWithNamesAndTypes\r\n"
             f"--{boundary}\r\nContent-Disposition: form-data; name=\"param_lim\"\r\n\r\n500\r\n--{boundary}--\r\n").encode()
st, hdr, body = post({"database": db}, multipart, {"Content-Type": f"multipart/form-data; boundary={boundary}", "Accept-Encoding": "lz4"})
assert st == 200 and hdr.get("Content-Encoding") == "lz4", (st, hdr, body)
data = lz4.frame.decompress(body)
assert data.endswith(struct.pack("<Q", 500) + struct.pack("<Q", sum(range(500)))), data
st, hdr, body = post({"database": db}, f"SELECT * FROM no_such_table_{t}".encode())
assert st == 404 and hdr.get("X-ClickHouse-Exception-Code") == "60" and body.startswith(b"Code: 60. DB::Exception:"), (st, body)
# An INSERT carrying its own SETTINGS clause, with URL settings beside it.
st, _, body = post({"database": db, "query": f"INSERT INTO {t}(id, name) SETTINGS optimize_on_insert = 0 FORMAT RowBinary",
                    "insert_deduplication_token": "smoke-settings"}, rows)
assert st == 200, body
assert post({"database": db}, f"SELECT count() FROM {t}".encode())[2].strip() == b"2000", "both inserts stored"
# A client that dies mid-body (Content-Length promised more, the body ends on a row boundary):
# nothing of it is inserted.
import socket
from urllib.parse import urlencode
head = rows[:sum(4 + 1 + len(f"n{i}") for i in range(500))]
query = urlencode({"database": db, "query": f"INSERT INTO {t}(id, name) FORMAT RowBinary"})
sock = socket.create_connection((url.hostname, url.port))
sock.sendall((f"POST /?{query} HTTP/1.1\r\nHost: x\r\nX-ClickHouse-User: {url.username}\r\n"
              f"X-ClickHouse-Key: {url.password}\r\nContent-Length: {len(rows)}\r\n\r\n").encode() + head)
sock.shutdown(socket.SHUT_WR)
sock.recv(1000)
sock.close()
assert post({"database": db}, f"SELECT count() FROM {t}".encode())[2].strip() == b"2000", "a truncated body inserts nothing"
# Chunked compressed INSERTs, as clickhouse-rs streams them (the front decompresses while it
# reads): chunks that cut blocks anywhere are stored whole; a corrupted block is refused; a body
# whose final chunk never comes (the crate aborts an INSERT dropped before `end`) stores nothing.
def chunked(params, chunks, end=True):
    sock = socket.create_connection((url.hostname, url.port))
    sock.sendall((f"POST /?{urlencode(params)} HTTP/1.1\r\nHost: x\r\nX-ClickHouse-User: {url.username}\r\n"
                  f"X-ClickHouse-Key: {url.password}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode())
    for c in chunks:
        sock.sendall(b"%x\r\n" % len(c) + c + b"\r\n")
    if end:
        sock.sendall(b"0\r\n\r\n")
    else:
        sock.shutdown(socket.SHUT_WR)
    answer = b""
    while True:
        got = sock.recv(65536)
        if not got:
            break
        answer += got
    sock.close()
    return answer
insert = {"database": db, "query": f"INSERT INTO {t}(id, name) FORMAT RowBinary", "decompress": "1"}
framed = encode_native_frames(rows, block=700)  # several blocks
pieces = [framed[i:i + 333] for i in range(0, len(framed), 333)]
answer = chunked(insert, pieces)
assert b" 200 " in answer.split(b"\r\n")[0], answer
assert post({"database": db}, f"SELECT count() FROM {t}".encode())[2].strip() == b"3000", "a chunked insert stored"
bad = bytearray(framed); bad[len(bad) // 2] ^= 0xFF
answer = chunked(insert, [bytes(bad[i:i + 333]) for i in range(0, len(bad), 333)])
assert b"X-ClickHouse-Exception-Code: 40" in answer, answer
assert chunked(insert, pieces[:-1], end=False) == b"", "an unended chunked insert gets no answer"
assert post({"database": db}, f"SELECT count() FROM {t}".encode())[2].strip() == b"3000", "corrupt and unended inserts store nothing"
# Queries from two connections run at once, as on a server: a quick one finishes while a slow one
# (the engine sleeping) still holds its session. Ordering, not durations: the slow query must still
# be running when the quick one has answered.
import threading, time
slow_done = threading.Event()
def slow():
    st, _, body = post({"database": db, "max_execution_time": "30"}, b"SELECT sleep(2)")
    assert st == 200, body
    slow_done.set()
th = threading.Thread(target=slow)
th.start()
time.sleep(0.3)
st, _, body = post({"database": db}, f"SELECT count() FROM {t}".encode())
assert st == 200 and body.strip() == b"3000", body
assert not slow_done.is_set(), "a quick query waited for a slow one: the engine runs one query at a time"
th.join()
assert slow_done.is_set()
# A query's URL settings end with it: the next query, whichever session serves it, has the default.
for _ in range(8):
    st, _, body = post({"database": db, "max_threads": "3"}, b"SELECT getSetting('max_threads')")
    assert st == 200 and body.strip() == b"3", body
for _ in range(8):
    st, _, body = post({"database": db}, b"SELECT changed FROM system.settings WHERE name = 'max_threads'")
    assert st == 200 and body.strip() == b"0", ("a URL setting outlived its query", body)
post({"database": db}, f"DROP TABLE {t}".encode())

print("clickhouse ok: server", version, "MergeTree TTL, materialized view, parameters, lz4 and plain inserts, auth, concurrent queries")
