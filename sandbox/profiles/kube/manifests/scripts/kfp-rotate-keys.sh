set -eu
key="${accesskey:?the Secret gave no accesskey in the environment}"
secret="${secretkey:?the Secret gave no secretkey in the environment}"
echo "s3.configure -user @KFP_S3_USER@ -delete -apply" | /usr/bin/weed shell >/dev/null
echo "s3.configure -user @KFP_S3_USER@ -access_key $key -secret_key $secret -actions Admin -apply" \
  | /usr/bin/weed shell >/dev/null
echo "@KFP_S3_USER@'s keys replaced"
