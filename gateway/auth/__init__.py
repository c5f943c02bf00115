"""Authentication and authorization of writes against the local token policy (SPEC 4).

credentials (request -> token), policy (pure model: authenticate, may_write/may_read),
policyschema (what a valid policy file says), policyfile (load, create, add/remove, atomic write),
policywatch (hot reload on SIGHUP and file change), ratelimit (per-token token buckets).
"""
