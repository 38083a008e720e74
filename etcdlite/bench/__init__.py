"""``etcdlite bench``: etcdlite side by side with real etcd and the Python floor.

Modules: :mod:`.workloads` (the registry: what is measured, where, which metrics),
:mod:`.kv` (workloads for every target), :mod:`.local` (in-process stalls, memory, the
Python floor, start-up), :mod:`.ctx` (what a workload gets), :mod:`.targets` (the embedded
store, the ``etcdlite serve`` and ``etcd`` children, a given endpoint), :mod:`.measure`
(latency, CPU from /proc, event-loop stalls, progress), :mod:`.report` (the table, the
issue's targets, JSON), :mod:`.runner` (one run over every target) and :mod:`.cli` (the
command line). The client axis (``--clients etcdlite,aetcd,etcd3``, issue #17) is
:mod:`.clients` (the parent: one etcd, a child per run, the table of ratios against aetcd)
and :mod:`.clientrun` (the child: one client, one workload). Importing this package loads
none of them.
"""
