#!/usr/bin/env python3
"""Check an Autobahn|Testsuite fuzzingclient report and summarise it.

    python3 .ci/autobahn/check.py OUTDIR [--allow BEHAVIOUR]...

Reads OUTDIR/index.json (written by `wstest -m fuzzingclient`) and, when present,
OUTDIR/expected_cases.json (written by run.sh: the agent and the case ids the spec selected).
Prints a table of counts per section per behaviour, lists every case that did not pass, and
writes the same as OUTDIR/summary.md.

A case passes when both its `behavior` and its `behaviorClose` are acceptable:
  OK, NON-STRICT, INFORMATIONAL  always;
  UNIMPLEMENTED                  only in sections 12 and 13 (permessage-deflate);
  anything else fails: FAILED, and the close verdicts WRONG CODE (wrong close code),
  UNCLEAN (the spec wants a clean close there) and FAILED BY CLIENT (the server left the TCP
  connection for the client to drop), and any value this script does not know.
  --allow BEHAVIOUR accepts one more value everywhere (e.g. --allow "FAILED BY CLIENT").
A case in expected_cases.json that is missing from index.json (it never ran: the server was
down or went away, wstest was killed) fails too, as does an empty report.

Exit status: 0 every case passed, 1 some did not, 2 the report is missing or unreadable.
"""

import argparse
import json
import os
import sys

PASS = {"OK", "NON-STRICT", "INFORMATIONAL"}
UNIMPLEMENTED_OK_SECTIONS = {"12", "13"}
ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "WRONG CODE", "UNCLEAN", "FAILED BY CLIENT"]
SECTIONS = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved Bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 Handling",
    "7": "Close Handling",
    "9": "Limits/Performance",
    "10": "Misc",
    "12": "Compression (payloads)",
    "13": "Compression (parameters)",
}


def case_key(case_id):
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def counts_text(counter):
    keys = sorted(counter, key=lambda b: (ORDER.index(b) if b in ORDER else len(ORDER), b))
    return ", ".join("%s %d" % (b, counter[b]) for b in keys)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--allow", action="append", default=[], metavar="BEHAVIOUR",
                    help="accept this behaviour too (repeatable)")
    args = ap.parse_args()
    accepted = PASS | set(args.allow)

    index_path = os.path.join(args.outdir, "index.json")
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        print("autobahn check: cannot read %s: %s" % (index_path, e), file=sys.stderr)
        return 2

    expected, agent = None, None
    expected_path = os.path.join(args.outdir, "expected_cases.json")
    if os.path.exists(expected_path):
        with open(expected_path) as f:
            e = json.load(f)
        expected, agent = e["cases"], e["agent"]

    if agent is None:
        if len(index) != 1:
            print("autobahn check: index.json holds %d agents (%s); expected one"
                  % (len(index), ", ".join(sorted(index)) or "none"), file=sys.stderr)
            return 2 if not index else 1
        agent = next(iter(index))
    results = index.get(agent, {})
    others = sorted(a for a in index if a != agent)

    # section -> {"cases", "behavior": {b: n}, "close": {b: n}, "failed": n}
    sections = {}
    failures = []  # (case id, behavior, behaviorClose, why)

    def section_of(case_id):
        return case_id.split(".")[0]

    def row(sec):
        return sections.setdefault(sec, {"cases": 0, "behavior": {}, "close": {}, "failed": 0})

    def acceptable(sec, behaviour):
        return behaviour in accepted or (behaviour == "UNIMPLEMENTED" and sec in UNIMPLEMENTED_OK_SECTIONS)

    for case_id in sorted(results, key=case_key):
        r = results[case_id]
        sec = section_of(case_id)
        s = row(sec)
        s["cases"] += 1
        b, bc = r.get("behavior", "?"), r.get("behaviorClose", "?")
        s["behavior"][b] = s["behavior"].get(b, 0) + 1
        s["close"][bc] = s["close"].get(bc, 0) + 1
        if not (acceptable(sec, b) and acceptable(sec, bc)):
            s["failed"] += 1
            why = ""
            try:
                with open(os.path.join(args.outdir, r["reportfile"])) as f:
                    d = json.load(f)
                parts = [d.get("description", "")]
                if not acceptable(sec, b):
                    parts.append("behavior: %s" % d.get("result", ""))
                if not acceptable(sec, bc):
                    parts.append("close: %s (remote close code %s)" % (d.get("resultClose", ""), d.get("remoteCloseCode")))
                why = " | ".join(p for p in parts if p)
            except (OSError, ValueError, KeyError):
                pass
            failures.append((case_id, b, bc, why))

    missing = []
    if expected is not None:
        missing = sorted(set(expected) - set(results), key=case_key)
        for case_id in missing:
            s = row(section_of(case_id))
            s["cases"] += 1
            s["failed"] += 1
            s["behavior"]["MISSING"] = s["behavior"].get("MISSING", 0) + 1
    unexpected = sorted(set(results) - set(expected), key=case_key) if expected is not None else []

    # --- the table ------------------------------------------------------------------------
    header = ["section", "cases", "behavior", "behaviorClose", "result"]
    rows = []
    total_cases = total_failed = 0
    for sec in sorted(sections, key=lambda x: int(x) if x.isdigit() else 999):
        s = sections[sec]
        total_cases += s["cases"]
        total_failed += s["failed"]
        name = "%s %s" % (sec, SECTIONS.get(sec, ""))
        rows.append([name.strip(), str(s["cases"]), counts_text(s["behavior"]), counts_text(s["close"]),
                     "FAIL (%d)" % s["failed"] if s["failed"] else "pass"])
    rows.append(["total", str(total_cases), "", "", "FAIL (%d)" % total_failed if total_failed else "pass"])

    ok = total_cases > 0 and total_failed == 0 and not others
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.rjust(w) if i == 1 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = ["autobahn check: agent %s, %s" % (agent, index_path), line(header)]
    out += [line(r) for r in rows]
    # A case whose opening handshake never completed has a duration of milliseconds since the
    # epoch (wstest subtracts from an unset start); such values are left out.
    durations = sorted(((r.get("duration", 0), c) for c, r in results.items()
                        if 0 <= r.get("duration", 0) < 3600 * 1000), reverse=True)
    if durations:
        out.append("case time: %.1f s in all; slowest: %s" % (
            sum(d for d, _ in durations) / 1000.0,
            ", ".join("%s %d ms" % (c, d) for d, c in durations[:3])))
    for case_id, b, bc, why in failures[:40]:
        out.append("  FAIL %s: %s / %s  %s" % (case_id, b, bc, why))
    if len(failures) > 40:
        out.append("  ... and %d more (summary.md has them all)" % (len(failures) - 40))
    if missing:
        out.append("  MISSING (never ran) %d: %s" % (len(missing), " ".join(missing[:60]) + (" ..." if len(missing) > 60 else "")))
    if unexpected:
        out.append("  note: %d cases ran that the spec did not select: %s" % (len(unexpected), " ".join(unexpected[:20])))
    if others:
        out.append("  FAIL: index.json has other agents too (%s): a stale or shared OUTDIR?" % ", ".join(others))
    if total_cases == 0:
        out.append("  FAIL: no case ran at all (was the server listening?)")
    out.append("autobahn check: %s" % ("PASS, %d cases" % total_cases if ok else "FAILED, %d of %d cases did not pass" % (total_failed, total_cases)))
    print("\n".join(out))

    # --- summary.md -------------------------------------------------------------------------
    md = ["# Autobahn|Testsuite: %s" % ("pass" if ok else "FAILED"), "",
          "Agent `%s`, %d cases, %d did not pass. Accepted: %s; UNIMPLEMENTED in sections %s only."
          % (agent, total_cases, total_failed, ", ".join(sorted(accepted)), " and ".join(sorted(UNIMPLEMENTED_OK_SECTIONS))), "",
          "| " + " | ".join(header) + " |", "|" + "|".join(["---", "---:", "---", "---", "---"]) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    if failures or missing:
        md += ["", "## Cases that did not pass", ""]
        md += ["- **%s**: `%s` / `%s` %s" % (c, b, bc, why.replace("|", "\\|")) for c, b, bc, why in failures]
        md += ["- **%s**: never ran" % c for c in missing]
    if others:
        md += ["", "Other agents in index.json: %s" % ", ".join(others)]
    md += ["", "Per-case details: `index.html` in this directory."]
    with open(os.path.join(args.outdir, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")

    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
