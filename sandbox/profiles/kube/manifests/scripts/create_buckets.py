import os, sys, time
import boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name=os.environ["AWS_DEFAULT_REGION"],
                  config=Config(retries={"max_attempts": 2}, connect_timeout=3, read_timeout=10))
for attempt in range(60):
    try:
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        break
    except Exception as error:
        print(f"waiting for the object store: {error}", flush=True)
        time.sleep(5)
else:
    sys.exit("the object store did not answer")
for bucket in os.environ["BUCKETS"].split(","):
    if bucket in existing:
        print(f"bucket {bucket} exists")
    else:
        s3.create_bucket(Bucket=bucket)
        print(f"bucket {bucket} created")
