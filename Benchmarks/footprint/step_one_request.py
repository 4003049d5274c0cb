# gdb script for footprint.sh: stops the process at FOOTPRINT_BREAK (a function entered once
# per request) three times, then single-steps that thread until it gets there again and
# writes every instruction address it ran, one per line (hex), to FOOTPRINT_OUT.
import os
import gdb

target = int(os.environ["FOOTPRINT_BREAK"], 16)
gdb.execute("set pagination off")
gdb.execute("set confirm off")
vdso = None
for line in open("/proc/%d/maps" % gdb.selected_inferior().pid):
    if "[vdso]" in line:
        start, end = line.split()[0].split("-")
        vdso = (int(start, 16), int(end, 16))
gdb.execute("break *%d" % target)
for _ in range(3):
    gdb.execute("continue", to_string=True)
gdb.execute("set scheduler-locking step")  # only this thread moves while stepping
addresses = []
gdb.execute("stepi", to_string=True)
while len(addresses) < 200000:
    pc = int(gdb.parse_and_eval("$pc"))
    if pc == target:
        break
    addresses.append(pc)
    if vdso and vdso[0] <= pc < vdso[1]:
        # The vDSO's clock read retries for ever when single-stepped: counted as one step.
        gdb.execute("finish", to_string=True)
    else:
        gdb.execute("stepi", to_string=True)
with open(os.environ["FOOTPRINT_OUT"], "w") as out:
    out.write("".join("%x\n" % pc for pc in addresses))
gdb.execute("delete")
gdb.execute("detach")
gdb.execute("quit")
