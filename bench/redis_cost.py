"""What the Redis presence store costs Redis: memory, commands and Redis CPU per reader, per
article and per process (docs/scaling.md).

    python -m bench.redis_cost                      # 10,000 readers, 100 articles, 2 processes
    python -m bench.redis_cost --readers 2000 --json

Drives ``RedisStore`` directly, as the hubs of ``--procs`` processes would (each reader claimed
online and joined to one article, Zipf(1.0) popularity with the first article at 20%; one
``update`` of every reader per tick; one heartbeat per process), against a private
``redis-server`` on a free port, so ``INFO`` readings are this run's alone. ``make bench``
runs it after the server benchmark and appends its table to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import sys
from dataclasses import replace

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "presence_site.settings")
django.setup()

from bench.run import REPORT, zipf_weights  # noqa: E402
from presence.store.base import Reader  # noqa: E402
from presence.store.redis import RedisStore  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402


def memory(client) -> int:
    """Bytes held by the keys (``MEMORY USAGE`` of each): not the clients' buffers or the scripts."""
    return sum(client.memory_usage(key, samples=0) or 0 for key in client.scan_iter(count=1000))


def counters(client) -> dict:
    """Redis CPU seconds and commands executed so far (the commands inside scripts included;
    the measurement's own INFO, SCAN and MEMORY left out)."""
    stats = client.info("all")
    own = {"cmdstat_info", "cmdstat_scan", "cmdstat_memory|usage", "cmdstat_memory"}
    commands = sum(v["calls"] for k, v in stats.items() if k.startswith("cmdstat_") and k not in own)
    scripts = sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))
    return {"cpu": stats["used_cpu_user"] + stats["used_cpu_sys"], "commands": commands, "scripts": scripts}


async def measure(args, server: RedisServer) -> dict:
    rng = random.Random(args.seed)
    rooms = [f"article:{n}" for n in range(1, args.articles + 1)]
    weights = zipf_weights(len(rooms), args.hot_share)
    readers = [Reader(f"r{n:06d}", None, 0.0, 1_000, 1_000) for n in range(args.readers)]
    placed = list(zip(rng.choices(rooms, weights, k=args.readers), readers, strict=True))
    procs = [RedisStore(f"proc-{p}", server.url, prefix="cost") for p in range(args.procs)]
    mine = [placed[p:: args.procs] for p in range(args.procs)]  # each process holds a share
    client = server.client()
    client.config_set("maxmemory-policy", "noeviction")
    steps: dict[str, dict] = {}

    async def step(name: str, work, per: int) -> None:
        before = {"memory": memory(client), **counters(client)}
        await work()
        after = counters(client)
        after["memory"] = memory(client)
        steps[name] = {"per": per, **{k: (after[k] - before[k]) / per for k in after}}

    async def each(call):
        for p, store in enumerate(procs):
            await asyncio.gather(*(call(store, room, reader) for room, reader in mine[p]))

    now = 10_000
    await step("process heartbeat, no readers", lambda: asyncio.gather(
        *(store.heartbeat(now, 12_000, [], []) for store in procs)), len(procs))
    await step("reader online (claim)", lambda: each(lambda s, _room, r: s.claim_online(r.id)), args.readers)
    await step("reader joins an article", lambda: each(lambda s, room, r: s.join(room, r)), args.readers)
    occupied = len({room for room, _ in placed})

    async def tick() -> None:
        nonlocal now
        now += 1_000
        for p, store in enumerate(procs):
            await store.update([(room, replace(r, position=rng.random(), updated_at=now)) for room, r in mine[p]])
            await store.counts([room for room, _ in mine[p]])

    await step("progress, per reader per tick (update + counts)", tick, args.readers)
    await step("process heartbeat, per reader held", lambda: asyncio.gather(*(
        store.heartbeat(now, 12_000, [r.id for _, r in mine[p]], [(room, r) for room, r in mine[p]])
        for p, store in enumerate(procs))), args.readers)
    await step("ranking (top 10)", lambda: procs[0].ranking(10), 1)
    lone = [(f"lone:{n}", Reader(f"lone{n:04d}", None, 0.0, 1_000, 1_000)) for n in range(args.articles)]
    await step("an article with one reader (joins)", lambda: asyncio.gather(
        *(procs[0].join(room, reader) for room, reader in lone)), args.articles)
    held = memory(client)
    await step("reader leaves its article", lambda: each(lambda s, room, r: s.leave(room, r.id)), args.readers)
    await asyncio.gather(*(procs[0].leave(room, reader.id) for room, reader in lone))
    await step("reader offline (release)", lambda: each(lambda s, _room, r: s.release_online(r.id)), args.readers)
    for store in procs:
        await store.release_all()
        await store.close()
    end = memory(client)
    keys, version = client.dbsize(), client.info("server")["redis_version"]
    kinds = sorted({key.decode().rsplit(":", 1)[-1] for key in client.scan_iter(count=1000)})
    client.close()
    return {
        "readers": args.readers, "articles": args.articles, "occupied_articles": occupied, "procs": args.procs,
        "steps": steps, "memory_held": held, "memory_after_all_left": end, "keys_after_all_left": keys,
        "kinds_left": kinds,
        "redis_version": version,
    }


def markdown(result: dict, when: str) -> str:
    lines = [
        "",
        f"### {when} — Redis cost of the presence store (`python -m bench.redis_cost`)",
        "",
        f"{result['readers']} readers on {result['occupied_articles']} of {result['articles']} articles "
        f"(Zipf 1.0, first article 20%), {result['procs']} processes, one private redis-server "
        f"{result['redis_version']}. Per unit: memory in bytes (the sum of `MEMORY USAGE` over the keys), "
        "Redis CPU in µs (`used_cpu_user + sys`), commands executed (script calls and the commands inside them).",
        "",
        "| step | per | memory B | Redis CPU µs | commands | script calls |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in result["steps"].items():
        unit = "process" if "no readers" in name else "call" if s["per"] == 1 else "article" if "article with" in name \
            else "reader"
        lines.append(f"| {name} | {unit} | {s['memory']:.0f} | {s['cpu'] * 1e6:.1f} | {s['commands']:.1f} "
                     f"| {s['scripts']:.2f} |")
    lines += ["", f"Memory held with everyone present: {result['memory_held'] / 2**20:.1f} MiB; after every "
              f"reader left and every process released: {result['memory_after_all_left'] / 2**20:.2f} MiB, "
              f"{result['keys_after_all_left']} keys left (kinds: {', '.join(result['kinds_left'])}; "
              "the fences and versions that order late updates, kept an hour)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--articles", type=int, default=100)
    parser.add_argument("--hot-share", type=float, default=0.2)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the raw numbers too")
    parser.add_argument("--no-report", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    with RedisServer() as server:
        result = asyncio.run(measure(args, server))
    if args.json:
        print(json.dumps(result, indent=1))
    table = markdown(result, datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))
    print(table)
    if not args.no_report:
        with REPORT.open("a") as out:
            out.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
