"""AWS target (boto3, the code that runs against AWS): RDS, Route 53, ElastiCache, S3 backups and KMS, for the
environment of the run (the lab's AWS control plane under lab-cloud, real AWS under an aws environment)."""
