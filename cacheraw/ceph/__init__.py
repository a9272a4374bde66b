"""The Ceph cluster, seen from the worker's own librados client."""
