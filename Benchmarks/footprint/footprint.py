"""Summaries for footprint.sh: one table row per traced request."""
import sys


def row(label, code, data=None):
    pages = len({address >> 12 for address in code})
    lines = len({address >> 6 for address in code})
    if data is None:
        print(f"| {label} | {len(code)} | {pages} | {lines} | | |")
    else:
        print(f"| {label} | {len(code)} | {pages} | {lines} | {len({a >> 12 for a in data})} | {len({a >> 6 for a in data})} |")


def lackey(log, marker):
    """The last request of each kind between its marks: C's at +0/+64, privsep's at +128/+192."""
    marker = int(marker)
    marks = {marker: ("c", True), marker + 64: ("c", False), marker + 128: ("swift", True), marker + 192: ("swift", False)}
    current, segment, last = None, None, {}
    for line in open(log):
        if line.startswith("=="):
            continue
        parts = line.split()
        if len(parts) != 2:
            continue
        kind, address = parts[0], int(parts[1].split(",")[0], 16)
        if kind in ("S", "M") and address in marks:
            name, opening = marks[address]
            if opening:
                current, segment = name, ([], [])
            elif current == name:
                last[name] = segment
                current = None
            continue
        if current is not None:
            (segment[0] if kind == "I" else segment[1]).append(address)
    row("worker side: C (send, recvmsg, close), its reply queued", *last["c"])
    row("worker side: SupervisorConnection.open, its reply queued", *last["swift"])


def steps(path, label):
    code = [int(line, 16) for line in open(path) if line.strip()]
    if not code or len(code) >= 200000:
        sys.exit(f"footprint: no request traced for {label}")
    row(label, code)


if __name__ == "__main__":
    if sys.argv[1] == "lackey":
        lackey(sys.argv[2], sys.argv[3])
    else:
        steps(sys.argv[2], sys.argv[3])
