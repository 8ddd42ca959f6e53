# Raw loopback TCP throughput, for scale in docs/benchmarks.md: one sender, one receiver,
# 1 MiB writes, N seconds (default 5). Usage: python3 benches/loopback.py [SECONDS]
import socket, threading, time, sys
secs = float(sys.argv[1]) if len(sys.argv) > 1 else 5
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
got = [0]
def recv():
    c, _ = srv.accept(); buf = bytearray(1 << 20); v = memoryview(buf)
    while True:
        n = c.recv_into(v)
        if n == 0: break
        got[0] += n
t = threading.Thread(target=recv); t.start()
s = socket.create_connection(("127.0.0.1", port)); data = b"\0" * (1 << 20)
end = time.time() + secs; start = time.time()
while time.time() < end: s.sendall(data)
s.close(); t.join(); el = time.time() - start
gbs = got[0] / el
print(f"{gbs/1e9:.2f} GB/s = {gbs/234/1e6:.1f} M delivered 200-byte message frames/s (234 B each)")
