"""Leader election: three workers take turns leading, an observer follows the leader.

Each worker campaigns with its name, does leader-only work guarded by its leadership (a txn
that only commits while it still leads), proclaims a status and resigns, so the next
candidate in line (by create revision) is elected. The keys are Go's layout
``<name>/<lease id hex>``: ``etcdctl elect -l leader-election`` shows the same leaders.

Run: python examples/leader_election.py                        (embedded Store)
     python examples/leader_election.py --endpoint HOST:PORT    (etcd or ``etcdlite serve``)
"""

from __future__ import annotations

import argparse
import asyncio

from etcdlite import KV, Client, Put, Store

ELECTION = b"leader-election"
WORK_KEY = b"leader-election-work"


async def worker(kv: KV, name: str, turn: asyncio.Event) -> None:
    election = kv.election(ELECTION, ttl=10)  # the lease outlives a crashed leader by 10 s
    leader = await election.campaign(name, timeout=30)
    print(f"{name} is the leader (key {leader.key.decode()}, revision {leader.rev})")
    # Leader-only work: the write commits only while this leadership still exists.
    done = await kv.txn([election.is_owner()], [Put(WORK_KEY, f"written by {name}")])
    assert done.succeeded
    await election.proclaim(f"{name}: work done")
    await turn.wait()
    await election.resign()  # the next candidate is elected


async def observe(kv: KV, seen: list[bytes]) -> None:
    async with kv.election(ELECTION).observe() as leaders:
        async for leader in leaders:
            print(f"observer: leader is {leader.value.decode()}")
            seen.append(leader.value)


async def main(endpoint: str | None) -> None:
    kv: Store | Client = Client(endpoint) if endpoint else Store()
    async with kv:
        seen: list[bytes] = []
        observer = asyncio.ensure_future(observe(kv, seen))
        turns = [asyncio.Event() for _ in range(3)]
        workers = []
        for i, turn in enumerate(turns):
            workers.append(asyncio.ensure_future(worker(kv, f"worker-{i}", turn)))
            await asyncio.sleep(0.05)  # join the queue in order
        for turn in turns:
            await asyncio.sleep(0.05)
            print("current leader:", (await kv.election(ELECTION).leader()).value.decode())
            turn.set()
        await asyncio.gather(*workers)
        await asyncio.sleep(0.05)
        observer.cancel()
        await asyncio.gather(observer, return_exceptions=True)

        left = await kv.get_prefix(ELECTION + b"/")
        assert not left.kvs, left
        await kv.delete(WORK_KEY)
        print("done: every worker led once, nothing left behind")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", help="host:port of etcd (default: an embedded Store)")
    asyncio.run(main(parser.parse_args().endpoint))
