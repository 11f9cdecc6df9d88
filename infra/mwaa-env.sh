#!/usr/bin/env bash
# One command per stack (infra/cloudformation/), in this order the first time; all but `up`/`down` are long-lived.
# MWAA cannot be paused; an environment bills every hour it exists, so tear it down when idle.
#   infra/mwaa-env.sh images  OWNER/REPO        ECR repositories + the images workflow's push role (once per account)
#   infra/mwaa-env.sh vpc     [NatGateway|VpcEndpoints]   VPC, two private subnets, MWAA security group
#   infra/mwaa-env.sh bucket  BUCKET_NAME       source bucket (versioned, SSE-KMS) and its key
#   infra/mwaa-env.sh roles   OWNER/REPO GITHUB_ENVIRONMENT   the deploy role of one GitHub environment
#   infra/mwaa-env.sh up      [SUBNET_A,SUBNET_B SECURITY_GROUP]   create/update the environment from the bucket's
#                             current objects; subnets and group default to the VPC stack's outputs
#   infra/mwaa-env.sh down                      delete the environment; bucket, versions, secrets, VPC, roles stay
# Env: ENV_NAME (mlops-prod), BUCKET_STACK (<ENV_NAME>-bucket), ENV_STACK (<ENV_NAME>-env), VPC_STACK (airflow-mlops-vpc),
#   IMAGES_STACK (airflow-mlops-images), ROLES_STACK (<ENV_NAME>-ci-<GITHUB_ENVIRONMENT>), ENV_CLASS (mw1.small),
#   MIN_WORKERS (1), MAX_WORKERS (2), SCHEDULERS (2), WEBSERVER_ACCESS (PRIVATE_ONLY), SECRETS_PREFIX (airflow: one
#   per environment when two share an account, e.g. airflow/staging), CREATE_OIDC_PROVIDER (true),
#   AIRFLOW_VERSION (the template's default).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ENV_NAME="${ENV_NAME:-mlops-prod}"
BUCKET_STACK="${BUCKET_STACK:-${ENV_NAME}-bucket}"
ENV_STACK="${ENV_STACK:-${ENV_NAME}-env}"
VPC_STACK="${VPC_STACK:-airflow-mlops-vpc}"
IMAGES_STACK="${IMAGES_STACK:-airflow-mlops-images}"
ENV_CLASS="${ENV_CLASS:-mw1.small}"
MIN_WORKERS="${MIN_WORKERS:-1}"
MAX_WORKERS="${MAX_WORKERS:-2}"
SCHEDULERS="${SCHEDULERS:-2}"
WEBSERVER_ACCESS="${WEBSERVER_ACCESS:-PRIVATE_ONLY}"
SECRETS_PREFIX="${SECRETS_PREFIX:-airflow}"
CREATE_OIDC_PROVIDER="${CREATE_OIDC_PROVIDER:-true}"

usage() { sed -n '2,15p' "$0"; exit 2; }

need() {  # need N "$@": at least N arguments after the command
    local n="$1"; shift
    [ "$#" -ge "$n" ] || usage
}

output() {  # output STACK KEY: one output of a stack, or empty
    aws cloudformation describe-stacks --stack-name "$1" \
      --query "Stacks[0].Outputs[?OutputKey=='$2'].OutputValue" --output text 2>/dev/null | sed 's/^None$//' || true
}

latest_version() {  # VersionId of the current object, or empty
    aws s3api head-object --bucket "$1" --key "$2" --query VersionId --output text 2>/dev/null | sed 's/^None$//' || true
}

cmd="${1:-}"
if [ "$#" -gt 0 ]; then shift; fi
case "$cmd" in
  images)
    need 1 "$@"
    aws cloudformation deploy --no-fail-on-empty-changeset --stack-name "$IMAGES_STACK" --capabilities CAPABILITY_NAMED_IAM \
      --template-file "$here/cloudformation/ecr.yaml" \
      --parameter-overrides "GitHubRepository=$1" "CreateOidcProvider=$CREATE_OIDC_PROVIDER"
    echo "GitHub environment 'images' (main only): secret IMAGES_ROLE_ARN=$(output "$IMAGES_STACK" ImagesRoleArn);" \
      "images.yml's env: AWS_REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region || true)}}"
    ;;
  vpc)
    aws cloudformation deploy --no-fail-on-empty-changeset --stack-name "$VPC_STACK" \
      --template-file "$here/cloudformation/mwaa-vpc.yaml" --parameter-overrides "Egress=${1:-NatGateway}"
    echo "subnets $(output "$VPC_STACK" PrivateSubnetIds), security group $(output "$VPC_STACK" SecurityGroupId)"
    ;;
  bucket)
    need 1 "$@"
    aws cloudformation deploy --no-fail-on-empty-changeset --stack-name "$BUCKET_STACK" \
      --template-file "$here/cloudformation/mwaa-bucket.yaml" --parameter-overrides "BucketName=$1"
    ;;
  roles)
    need 2 "$@"
    roles_stack="${ROLES_STACK:-${ENV_NAME}-ci-$2}"
    aws cloudformation deploy --no-fail-on-empty-changeset --stack-name "$roles_stack" --capabilities CAPABILITY_NAMED_IAM \
      --template-file "$here/cloudformation/ci-roles.yaml" \
      --parameter-overrides "GitHubRepository=$1" "GitHubEnvironment=$2" "EnvironmentName=$ENV_NAME" \
        "BucketStackName=$BUCKET_STACK" "SecretsPrefix=$SECRETS_PREFIX"
    echo "GitHub environment '$2': DEPLOY_ROLE_ARN=$(output "$roles_stack" DeployRoleArn)" \
      "MWAA_ENVIRONMENT=$ENV_NAME MWAA_BUCKET=$(output "$BUCKET_STACK" BucketName)" \
      "MWAA_VARIABLES_PREFIX=$SECRETS_PREFIX/variables"
    ;;
  up)
    subnets="${1:-$(output "$VPC_STACK" PrivateSubnetIds)}"
    group="${2:-$(output "$VPC_STACK" SecurityGroupId)}"
    if [ -z "$subnets" ] || [ -z "$group" ]; then
      echo "no subnets/security group given and stack $VPC_STACK has none: run 'infra/mwaa-env.sh vpc' first" >&2
      exit 1
    fi
    bucket="$(output "$BUCKET_STACK" BucketName)"
    [ -n "$bucket" ] || { echo "bucket stack $BUCKET_STACK not found: run 'infra/mwaa-env.sh bucket NAME' first" >&2; exit 1; }
    params=("EnvironmentName=$ENV_NAME" "BucketStackName=$BUCKET_STACK" "EnvironmentClass=$ENV_CLASS"
            "PrivateSubnetIds=$subnets" "SecurityGroupId=$group"
            "MinWorkers=$MIN_WORKERS" "MaxWorkers=$MAX_WORKERS" "Schedulers=$SCHEDULERS"
            "WebserverAccessMode=$WEBSERVER_ACCESS" "SecretsPrefix=$SECRETS_PREFIX"
            "RequirementsObjectVersion=$(latest_version "$bucket" requirements.txt)"
            "PluginsObjectVersion=$(latest_version "$bucket" plugins.zip)"
            "StartupScriptObjectVersion=$(latest_version "$bucket" startup.sh)")
    if [ -n "${AIRFLOW_VERSION:-}" ]; then params+=("AirflowVersion=$AIRFLOW_VERSION"); fi
    aws cloudformation deploy --no-fail-on-empty-changeset --stack-name "$ENV_STACK" --capabilities CAPABILITY_NAMED_IAM \
      --template-file "$here/cloudformation/mwaa-environment.yaml" --parameter-overrides "${params[@]}"
    echo "environment $ENV_NAME: $(output "$ENV_STACK" WebserverUrl)"
    ;;
  down)
    aws cloudformation delete-stack --stack-name "$ENV_STACK"
    aws cloudformation wait stack-delete-complete --stack-name "$ENV_STACK"
    echo "environment $ENV_NAME deleted; bucket stack $BUCKET_STACK, its versions and the secrets under" \
      "$SECRETS_PREFIX/ kept"
    ;;
  *)
    usage ;;
esac
