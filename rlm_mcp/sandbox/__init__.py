"""The sandbox as the host sees it: the policy, bubblewrap around the worker, a cgroup per worker."""
