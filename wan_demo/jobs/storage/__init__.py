"""jobs.storage: where job files live (input images, MP4s, thumbnails, sidecars, live previews).

base.py (the Storage interface and make_storage), local.py (local folders), s3.py (any
S3-compatible bucket through boto3), common.py (storage keys, content types, durable local writes).

May import: core, boto3 (lazily, in s3.py).
"""
