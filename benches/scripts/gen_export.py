# Synthesises an export of N copies of the events in SRC: fresh stream ids
# and event ids per copy (uuid v7 layout, time-ordered like payorch's own
# ids), positions in order (the `payorch export` line format).
import json, sys, uuid
src = [json.loads(l) for l in open(sys.argv[1])]
n = int(sys.argv[2])
BASE_MS = 0x01A24A580000
seq = 0
def v7():
    global seq
    seq += 1
    ts = BASE_MS + seq // 4096
    return str(uuid.UUID(int=(ts << 80) | (7 << 76) | ((seq % 4096) << 64) | (2 << 62) | seq))
pos = 0
with open(sys.argv[3], "w") as out:
    for k in range(n):
        ids = {}
        for e in src:
            e = dict(e)
            s = e["stream_id"]
            if s not in ids:
                ids[s] = s.split("-", 1)[0] + "-" + v7()
            e["stream_id"] = ids[s]
            e["event_id"] = v7()
            pos += 1
            e["global_position"] = pos
            out.write(json.dumps(e, separators=(",", ":")) + "\n")
