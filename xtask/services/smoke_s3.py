"""Proves the S3 service is real, through boto3 (a client we did not write): put, ranged get, a multipart
upload, a presigned GET fetched with plain HTTP (and refused once expired), and a probe of conditional
create (If-None-Match), which Garage does not honour. Exits non-zero on any failure."""

import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

url = urlsplit(sys.argv[1])  # s3://bucket?endpoint=…&region=…&access_key_id=…&secret_access_key=…
q = {k: v[0] for k, v in parse_qs(url.query).items()}
bucket = url.netloc
s3 = boto3.client(
    "s3", endpoint_url=q["endpoint"], region_name=q["region"],
    aws_access_key_id=q["access_key_id"], aws_secret_access_key=q["secret_access_key"],
    config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                  request_checksum_calculation="when_required", response_checksum_validation="when_required"),
)
prefix = f"smoke/{uuid.uuid4().hex}"
data = os.urandom(300_000)
s3.put_object(Bucket=bucket, Key=f"{prefix}/a.bin", Body=data, ContentType="application/octet-stream")
got = s3.get_object(Bucket=bucket, Key=f"{prefix}/a.bin", Range="bytes=1000-1999")["Body"].read()
assert got == data[1000:2000], "ranged get returned other bytes"

part = 5 * 1024 * 1024
big = os.urandom(2 * part + 12345)
mp = s3.create_multipart_upload(Bucket=bucket, Key=f"{prefix}/big.bin")
parts = []
for i, off in enumerate(range(0, len(big), part), start=1):
    r = s3.upload_part(Bucket=bucket, Key=f"{prefix}/big.bin", UploadId=mp["UploadId"], PartNumber=i, Body=big[off:off + part])
    parts.append({"ETag": r["ETag"], "PartNumber": i})
s3.complete_multipart_upload(Bucket=bucket, Key=f"{prefix}/big.bin", UploadId=mp["UploadId"], MultipartUpload={"Parts": parts})
back = s3.get_object(Bucket=bucket, Key=f"{prefix}/big.bin")["Body"].read()
assert hashlib.sha256(back).digest() == hashlib.sha256(big).digest(), "multipart object differs"

signed = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": f"{prefix}/a.bin"}, ExpiresIn=2)
with urllib.request.urlopen(signed) as r:
    assert r.read() == data, "presigned GET returned other bytes"
time.sleep(3)
try:
    urllib.request.urlopen(signed)
    raise SystemExit("an expired presigned URL still worked")
except urllib.error.HTTPError as e:
    # AWS and MinIO answer 403 AccessDenied ("Request has expired"); Garage 400 ("Date is too old").
    reason = e.read().decode(errors="replace")
    assert e.code in (400, 403) and ("xpire" in reason or "too old" in reason), (e.code, reason)

try:
    s3.put_object(Bucket=bucket, Key=f"{prefix}/a.bin", Body=b"x", IfNoneMatch="*")
    conditional = "ignored (object overwritten)"
except ClientError as e:
    conditional = "honoured (" + e.response["Error"]["Code"] + ")"

for key in (f"{prefix}/a.bin", f"{prefix}/big.bin"):
    s3.delete_object(Bucket=bucket, Key=key)
print(f"s3 ok: put, ranged get, multipart ({len(big)} bytes), presigned GET and expiry; If-None-Match {conditional}")
