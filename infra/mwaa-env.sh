#!/usr/bin/env bash
# One command each: create/update the long-lived bucket, and create or tear down the MWAA environment.
# MWAA cannot be paused; an environment bills every hour it exists, so tear it down when idle.
#   infra/mwaa-env.sh bucket   BUCKET_NAME
#   infra/mwaa-env.sh up       SUBNET_A,SUBNET_B SECURITY_GROUP   (re-creates from the bucket's current objects)
#   infra/mwaa-env.sh down                                          (deletes the environment; bucket and versions stay)
# Env: ENV_NAME (mlops-prod), BUCKET_STACK (airflow-mlops-bucket), ENV_STACK (airflow-mlops-env), ENV_CLASS (mw1.small)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ENV_NAME="${ENV_NAME:-mlops-prod}"
BUCKET_STACK="${BUCKET_STACK:-airflow-mlops-bucket}"
ENV_STACK="${ENV_STACK:-airflow-mlops-env}"
ENV_CLASS="${ENV_CLASS:-mw1.small}"

latest_version() {  # VersionId of the current object, or empty
    aws s3api head-object --bucket "$1" --key "$2" --query VersionId --output text 2>/dev/null || true
}

case "${1:-}" in
  bucket)
    aws cloudformation deploy --stack-name "$BUCKET_STACK" \
      --template-file "$here/cloudformation/mwaa-bucket.yaml" --parameter-overrides "BucketName=$2"
    ;;
  up)
    bucket="$(aws cloudformation describe-stacks --stack-name "$BUCKET_STACK" \
      --query "Stacks[0].Outputs[?OutputKey=='BucketName'].OutputValue" --output text)"
    req="$(latest_version "$bucket" requirements.txt)"
    plugins="$(latest_version "$bucket" plugins.zip)"
    aws cloudformation deploy --stack-name "$ENV_STACK" --capabilities CAPABILITY_IAM \
      --template-file "$here/cloudformation/mwaa-environment.yaml" \
      --parameter-overrides "EnvironmentName=$ENV_NAME" "BucketStackName=$BUCKET_STACK" \
        "EnvironmentClass=$ENV_CLASS" "PrivateSubnetIds=$2" "SecurityGroupId=$3" \
        "RequirementsObjectVersion=${req/None/}" "PluginsObjectVersion=${plugins/None/}"
    ;;
  down)
    aws cloudformation delete-stack --stack-name "$ENV_STACK"
    aws cloudformation wait stack-delete-complete --stack-name "$ENV_STACK"
    echo "environment $ENV_NAME deleted; bucket stack $BUCKET_STACK kept"
    ;;
  *)
    sed -n '2,8p' "$0"; exit 2 ;;
esac
