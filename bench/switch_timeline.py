"""Lines up what the switch benchmark's application saw with cutover's steps, for one round.

    python switch_timeline.py TITLE CLIENT_PREFIX CUTOVER_JSON OLD_URL NEW_URL

CLIENT_PREFIX.events.json is written by switch_client.py (per writer: commits, failed writes,
connects, re-reads of the primary file, wall-clock seconds); CUTOVER_JSON is `cutover switch
--json` (each step's start_ms since the epoch and ms). Prints a Markdown section: the steps and
the application's events relative to the start of the fence, where the gap between the last
commit on the old primary and the first on the new one went, and per writer what it did in the
gap. Also prints one machine-readable line `SUMMARY {json}` last.
"""

import json
import sys


def main() -> None:
    title, prefix, report_file, old, new = sys.argv[1:6]
    writers = json.load(open(prefix + ".events.json"))["writers"]
    report = json.load(open(report_file))
    steps = report["steps"]
    by_name = {s["step"]: s for s in steps}
    t0 = by_name["fence"]["start_ms"] / 1e3  # everything relative to the fence's start
    rel = lambda t: (t - t0) * 1e3  # noqa: E731
    open_step = by_name["open the new primary"]
    opened = open_step["start_ms"] / 1e3 + open_step["ms"] / 1e3
    name = {old: "old", new: "new"}

    commits = [(e["t"], i, e["url"]) for i, w in enumerate(writers) for e in w if e["ev"] == "commit"]
    last_old = max((c for c in commits if c[2] == old), default=None)
    first_new = min((c for c in commits if c[2] == new), default=None)
    out = [f"### {title}", ""]
    if not last_old or not first_new:
        out.append(
            f"No commits on the {'old' if not last_old else 'new'} primary in this round "
            f"(cutover: write_pause_ms {report.get('write_pause_ms')}). Failed writes per writer:"
        )
        for i, w in enumerate(writers):
            refused = {}
            for e in w:
                if e["ev"] == "refused":
                    k = f"{name.get(e['url'], '?')} {e.get('code')} {e['msg'][:70]}"
                    refused[k] = refused.get(k, 0) + 1
            connects = sum(1 for e in w if e["ev"] == "connect")
            out.append(f"- writer {i}: {connects} connects; " + (", ".join(f"{n}× {k}" for k, n in refused.items()) or "none"))
        out.append("")
        print("\n".join(out))
        print("SUMMARY " + json.dumps({"gap_ms": None, "before_fence_ms": None, "fence_to_open_ms": None,
                                       "open_to_first_commit_ms": None, "writers": []}))
        return

    out.append("Times in ms from the start of the fence (cutover's clock and the application's are the same wall clock).")
    out.append("")
    out.append("| what | start | end | detail |")
    out.append("|---|---|---|---|")
    out.append(f"| last commit on the old primary (writer {last_old[1]}) | {rel(last_old[0]):.1f} | | |")
    for s in steps:
        a = rel(s["start_ms"] / 1e3)
        if a + s["ms"] < rel(last_old[0]) - 1000:
            continue  # long before the pause
        detail = s.get("detail", "").replace("|", "/")[:160]
        out.append(f"| cutover: {s['step']}{' (paused)' if s['paused'] else ''} | {a:.1f} | {a + s['ms']:.1f} | {detail} |")
    out.append(f"| first commit on the new primary (writer {first_new[1]}) | {rel(first_new[0]):.1f} | | |")
    gap = (first_new[0] - last_old[0]) * 1e3
    out.append("")
    out.append(
        f"Gap old → new: **{gap:.1f} ms** = {rel(t0) - rel(last_old[0]):.1f} ms before the fence "
        f"+ {rel(opened):.1f} ms fence → new primary open (cutover write_pause_ms {report['write_pause_ms']}) "
        f"+ {(first_new[0] - opened) * 1e3:.1f} ms from the open to the first commit."
    )
    out.append("")

    # Per writer: what it did from its last commit on the old primary to its first on the new.
    summary_writers = []
    for i, w in enumerate(writers):
        mine_old = [e["t"] for e in w if e["ev"] == "commit" and e["url"] == old]
        mine_new = [e["t"] for e in w if e["ev"] == "commit" and e["url"] == new]
        if not mine_old or not mine_new:
            continue
        a, b = max(mine_old), min(mine_new)
        gap_events = [e for e in w if a < e["t"] < b or (e["ev"] == "connect" and a < e["t"] + e["ms"] / 1e3 < b)]
        connects = [e for e in gap_events if e["ev"] == "connect"]
        refused = [e for e in gap_events if e["ev"] == "refused"]
        seen_new = min((e["t"] for e in gap_events if e["ev"] == "reread" and e["url"] == new), default=None)
        # The connect that produced the session of its first commit on the new primary.
        last_connect = max((e for e in w if e["ev"] == "connect" and e["t"] < b), key=lambda e: e["t"], default=None)
        line = {
            "writer": i,
            "last_old": round(rel(a), 1),
            "first_new": round(rel(b), 1),
            "connects_old": sum(1 for e in connects if e["url"] == old),
            "connects_new": sum(1 for e in connects if e["url"] == new),
            "connect_ms_total": round(sum(e["ms"] for e in connects), 1),
            "connect_ms_max": round(max((e["ms"] for e in connects), default=0.0), 1),
            "connects_new_before_open": sum(1 for e in connects if e["url"] == new and e["t"] + e["ms"] / 1e3 < opened),
            "refused": {},
            "saw_new_primary_at": round(rel(seen_new), 1) if seen_new else None,
            "last_connect": None
            if last_connect is None
            else {"start": round(rel(last_connect["t"]), 1), "ms": last_connect["ms"], "url": name.get(last_connect["url"], "?")},
        }
        for e in refused:
            key = f"{name.get(e['url'], '?')} {e.get('code')} {e['msg'][:70]}"
            line["refused"][key] = line["refused"].get(key, 0) + 1
        summary_writers.append(line)
        out.append(
            f"- writer {i}: last commit on old at {line['last_old']}, first on new at {line['first_new']} ms; "
            f"saw the new primary in the file at {line['saw_new_primary_at']} ms; "
            f"{line['connects_old']} connects to the old and {line['connects_new']} to the new primary "
            f"({line['connects_new_before_open']} of them finished before the open at {rel(opened):.1f} ms), "
            f"{line['connect_ms_total']} ms connecting in all (longest {line['connect_ms_max']} ms); "
            f"the session of its first new commit connected at {line['last_connect']['start'] if line['last_connect'] else '?'} ms "
            f"taking {line['last_connect']['ms'] if line['last_connect'] else '?'} ms; failed writes: "
            + (", ".join(f"{n}× {k}" for k, n in line["refused"].items()) or "none")
        )
    out.append("")
    # Every event near the gap, compressed into runs (kind, primary, code).
    out.append("<details><summary>events from 50 ms before the last old commit to the first new commit + 20 ms</summary>")
    out.append("")
    out.append("```")
    lo, hi = last_old[0] - 0.05, first_new[0] + 0.02
    for i, w in enumerate(writers):
        runs = []
        for e in w:
            if not lo <= e["t"] <= hi:
                continue
            key = (e["ev"], e.get("url"), e.get("code"), e.get("ok"))
            if runs and runs[-1][0] == key:
                runs[-1][1].append(e)
            else:
                runs.append((key, [e]))
        out.append(f"writer {i}:")
        for (ev, url, code, ok), es in runs:
            dur = sum(e.get("ms", 0.0) for e in es)
            what = ev
            if ev == "connect":
                what += " ok" if ok else f" FAILED {code}"
            if ev == "refused":
                what += f" {code} {es[0]['msg'][:60]}"
            if ev == "reread":
                what += " (changed)" if any(e.get("changed") for e in es) else ""
            out.append(
                f"  {rel(es[0]['t']):9.1f} … {rel(es[-1]['t']):9.1f}  {len(es):4d}× {what} on {name.get(url, url)}"
                + (f"  ({dur:.1f} ms in all)" if ev in ("connect", "commit", "refused") else "")
            )
    out.append("```")
    out.append("</details>")
    out.append("")
    print("\n".join(out))
    print(
        "SUMMARY "
        + json.dumps(
            {
                "gap_ms": round(gap, 1),
                "before_fence_ms": round(rel(t0) - rel(last_old[0]), 1),
                "fence_to_open_ms": round(rel(opened), 1),
                "open_to_first_commit_ms": round((first_new[0] - opened) * 1e3, 1),
                "writers": summary_writers,
            }
        )
    )


if __name__ == "__main__":
    main()
