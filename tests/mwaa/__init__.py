"""A stateful Amazon MWAA stand-in (``standin.MwaaStandIn``) for tests: real boto3 over HTTP, backed by moto S3."""
