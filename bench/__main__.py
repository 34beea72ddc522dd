"""`python -m bench [scenario] [options]`: TrackOPZ's benchmarks (issue 7), see docs/PERFORMANCE.md.

    python -m bench                      # everything, full sizes (about 20 minutes on 2 cores)
    python -m bench --quick              # everything, small sizes (a smoke run, ~5 minutes)
    python -m bench reads --products 1000,10000,100000
    python -m bench fanout --clients 100,1000
    python -m bench compare --clients 1000,5000 --repeats 3
    python -m bench writes --writers 1,4,16
    python -m bench storm --clients 2000 --behind 50
    python -m bench fanout --clients 1000 --profile   # py-spy on the workers while firing

Each scenario writes its JSON into bench/results/ and its section of docs/PERFORMANCE.md
(between `<!-- bench:NAME -->` markers), stamped with machine, date and commit; --no-doc skips it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench import env, report, scenarios


def ints(s: str) -> list[int]:
    return [int(x.replace("_", "")) for x in s.split(",") if x.strip()]


FULL = {
    "reads": {"products": [1000, 10000, 100000], "requests": 100},
    # 1,000 and 5,000 clients are measured three times each by `compare`
    "fanout": {"clients": [100, 10000], "transitions": 10},
    "compare": {"clients": [1000, 5000], "repeats": 3, "transitions": 10},
    "writes": {"writers": [1, 4, 16], "seconds": 10, "listeners": 1000, "rate": 20, "mix": 15},
    "storm": {"clients": 2000, "behind": 50},
}
QUICK = {
    "reads": {"products": [1000, 10000], "requests": 30},
    "fanout": {"clients": [100, 300], "transitions": 5},
    "compare": {"clients": [200], "repeats": 3, "transitions": 5},
    "writes": {"writers": [1, 4, 16], "seconds": 3, "listeners": 200, "rate": 20, "mix": 5},
    "storm": {"clients": 300, "behind": 50},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument(
        "scenario",
        nargs="?",
        default="all",
        choices=[
            "all",
            "reads",
            "fanout",
            "compare",
            "writes",
            "storm",
            "setup-flask-sse",
            "render",
        ],
    )
    ap.add_argument("files", nargs="*", help="render: result JSON files to write into the doc")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument(
        "--source",
        default="head",
        help="head (default: a clean export of HEAD), tree, a path, or a commit",
    )
    ap.add_argument(
        "--patch",
        action="append",
        default=[],
        help="apply this diff (e.g. bench/proposals/read-path.diff) to a copy of the source",
    )
    ap.add_argument("--profile", action="store_true", help="py-spy the workers while measuring")
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/PERFORMANCE.md")
    ap.add_argument("--products", type=ints, help="reads: dataset sizes; others: one size")
    ap.add_argument("--clients", type=ints, help="fanout/compare: client counts; storm: one")
    ap.add_argument("--transitions", type=int, help="fanout/compare: POSTs per run")
    ap.add_argument("--repeats", type=int, help="compare: runs per system (>= 3 for the doc)")
    ap.add_argument("--writers", type=ints, help="writes: concurrent writers")
    ap.add_argument("--seconds", type=float, help="writes: seconds per writer count")
    ap.add_argument("--listeners", type=int, help="writes: listeners in the factory mix (0: skip)")
    ap.add_argument("--behind", type=int, help="storm: events committed while disconnected")
    ap.add_argument("--requests", type=int, help="reads: timed requests per endpoint")
    args = ap.parse_args(argv)

    if args.scenario == "setup-flask-sse":
        from bench import procs

        procs.setup_flask_sse()
        return 0

    if args.scenario == "render":
        import json

        for f in args.files:
            data = json.loads(open(f).read())
            for name, res in data.items():
                if name != "meta":
                    report.update(name, data["meta"], res)
                    print(f"bench: {name} from {f} -> {report.DOC}")
        return 0

    nofile = env.raise_nofile()
    preset = QUICK if args.quick else FULL
    source = env.resolve_source(args.source, args.patch)
    ctx = scenarios.Ctx(source, profile=args.profile)
    stream_products = (args.products or [10000])[0] if args.scenario != "reads" else 10000
    meta = {
        "machine": env.machine_info(),
        "commit": source.rev,
        "source": source.label,
        "quick": args.quick,
        "patches": [Path(p).name for p in args.patch],
        "nofile": nofile,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    print(f"bench: {meta['machine']}\nbench: serving {source.label}; RLIMIT_NOFILE {nofile}")

    todo = (
        ["fanout", "compare", "writes", "storm", "reads"]
        if args.scenario == "all"
        else [args.scenario]
    )
    results = {}
    for name in todo:
        p = preset[name]
        settled = env.settle()
        if settled["waitedSeconds"] >= 1:
            print(
                f"bench: waited {settled['waitedSeconds']} s for {settled['timeWaitBefore']:,} "
                f"TCP sockets to leave TIME_WAIT before {name}",
                flush=True,
            )
        t0 = time.monotonic()
        if name == "reads":
            res = scenarios.reads(
                ctx, args.products or p["products"], requests=args.requests or p["requests"]
            )
        elif name == "fanout":
            res = scenarios.fanout(
                ctx,
                args.clients or p["clients"],
                transitions=args.transitions or p["transitions"],
                products=stream_products,
            )
        elif name == "compare":
            res = scenarios.compare(
                ctx,
                args.clients or p["clients"],
                repeats=args.repeats or p["repeats"],
                transitions=args.transitions or p["transitions"],
                products=stream_products,
            )
        elif name == "writes":
            res = scenarios.writes(
                ctx,
                writers=args.writers or p["writers"],
                seconds=args.seconds or p["seconds"],
                products=stream_products,
                mix_listeners=p["listeners"] if args.listeners is None else args.listeners,
                mix_rate=p["rate"],
                mix_seconds=p["mix"],
            )
        else:
            res = scenarios.storm(
                ctx,
                clients=(args.clients or [p["clients"]])[0],
                behind=args.behind or p["behind"],
                products=stream_products,
            )
        res["elapsedSeconds"] = round(time.monotonic() - t0, 1)
        res["settled"] = settled
        if ctx.profiles:
            res["profiles"] = ctx.profiles
            ctx.profiles = []
        if args.patch:
            name = name + "+" + "+".join(Path(p).stem for p in args.patch)
        results[name] = res
        path = scenarios.dump(name, {"meta": meta, name: res})
        print(f"bench: {name} done in {res['elapsedSeconds']} s -> {path}", flush=True)
        if not args.no_doc:
            report.update(name, meta, res)
    if not args.no_doc:
        print(f"bench: figures written to {report.DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
