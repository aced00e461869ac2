"""Scale-out building blocks on NATS JetStream and Redis, one concept per module.

`partitions` (which partition a user is in), `bus` (the stream, the bucket, idempotent publish),
`leases` (which node owns which partition), `consumer` (consuming an owned partition),
`stream_time` (the cluster-wide stream time) and `online_store` (medians in Redis for reads).
"""
