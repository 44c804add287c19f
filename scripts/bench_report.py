"""Formats a `scripts/bench` run (target/bench/) as the Markdown tables of BENCHMARKS.md."""

import json
import os
import pathlib
import platform
import subprocess
import sys


def criterion_medians(root):
    """{group: {bench: median ns}} from criterion's estimates."""
    groups = {}
    for estimates in sorted(root.glob("*/*/new/estimates.json")):
        bench, group = estimates.parent.parent.name, estimates.parent.parent.parent.name
        groups.setdefault(group, {})[bench] = json.loads(estimates.read_text())["median"]["point_estimate"]
    return groups


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, {rustc}"


def main():
    out = pathlib.Path(sys.argv[1])
    print(f"Machine: {machine()}\n")

    groups = criterion_medians(out.parent / "criterion")
    if groups:
        print("### Verify + parse (criterion medians; ratio to the bare HMAC floor)\n")
        print("| payload | bench | median | × floor |")
        print("|---|---|---|---|")
        for group, benches in groups.items():
            floor = benches.get("floor_hmac")
            for bench, ns in benches.items():
                ratio = f"{ns / floor:.2f}" if floor else "-"
                print(f"| {group} | {bench} | {ns / 1000:.2f} µs | {ratio} |")
        print()

    cold = json.loads((out / "coldstart.json").read_text())
    ours, floor, trip = cold["clerk_sync"], cold.get("floor"), cold.get("dynamodb_round_trip_ms")
    print(f"### Cold start and invocations ({ours['runs']} cold starts; medians)\n")
    print("| | clerk-sync | floor | ratio |")
    print("|---|---|---|---|")
    rows = [
        ("init (exec → first `next`)", "init_ms", "ms"),
        ("first invocation", "first_invocation_ms", "ms"),
        ("cold start as a caller sees it (init + first)", "cold_ms", "ms"),
        ("warm invocation, median", "warm_median_ms", "ms"),
        ("warm invocation, p99", "warm_p99_ms", "ms"),
        ("process CPU per warm event", "cpu_per_warm_event_ms", "ms"),
        ("peak resident memory", "peak_rss_kb", "KB"),
    ]
    for label, key, unit in rows:
        mine, base = ours.get(key), (floor or {}).get(key)
        ratio = f"{mine / base:.2f}" if mine and base else "-"
        print(f"| {label} | {mine} {unit} | {base if base is not None else '-'} {unit} | {ratio} |")
    if floor and trip is not None:
        target = floor["cold_ms"] + trip
        write = cold.get("dynamodb_write", "write")
        print(f"\nFloor with one DynamoDB round trip (the function's own first {write}, replayed): "
              f"{floor['cold_ms']} + {trip} = {target:.3f} ms; clerk-sync's cold start is "
              f"{ours['cold_ms'] / target:.2f}× that.")
        warm_up = cold.get("dynamodb_warm_up_round_trip_ms")
        if warm_up is not None:
            both = target + warm_up
            print(f"With the init warm-up's round trip too (DescribeTable, {warm_up} ms): {both:.3f} ms; "
                  f"{ours['cold_ms'] / both:.2f}× that, {ours['cold_ms'] - both:.3f} ms above it.")
        print()

    sync = out / "sync.json"
    if sync.exists():
        figures = json.loads(sync.read_text())
        print(f"### POST /sync against the local fake Clerk ({figures['calls']} warm calls, each a new user)\n")
        print("| | |")
        print("|---|---|")
        print(f"| first /sync of a warm process (HTTPS client built, key set fetched) | {figures['first_ms']} ms |")
        print(f"| warm call, median | {figures['warm_median_ms']} ms |")
        print(f"| warm call, p99 | {figures['warm_p99_ms']} ms |")
        print(f"| requests to Clerk, first call | {figures['first_clerk_requests']} |")
        print(f"| requests to Clerk per warm call | {figures['clerk_requests_per_call']:g} |")
        requests = ", ".join(f"{op} {n:g}" for op, n in figures["dynamodb_requests_per_call"].items())
        print(f"| DynamoDB requests per warm call | {requests} |")
        print()

    binary = out / "arm64" / "bootstrap"
    if binary.exists():
        print("### Deployment\n")
        print(f"- stripped arm64 binary: {binary.stat().st_size / 1e6:.2f} MB")
        print(f"- deployment zip: {(out / 'bootstrap.zip').stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
