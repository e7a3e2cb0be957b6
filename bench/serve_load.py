"""Load for bench/serve.sh: POSTs the shipped photos to /v1/identify from N threads, one
keep-alive connection each, and prints one JSON line: latency p50/p99 (ms) and requests/s.

    python3 bench/serve_load.py HOST:PORT PHOTO_DIR CONCURRENCY REQUESTS
Standard library only."""
import http.client
import json
import pathlib
import sys
import threading
import time

address, photo_dir, concurrency, requests = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
photos = [p.read_bytes() for p in sorted(pathlib.Path(photo_dir).rglob("*.jpg"))]
host, port = address.rsplit(":", 1)
latencies, failures, lock = [], [], threading.Lock()
next_request = iter(range(requests))


def worker():
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    while True:
        with lock:
            n = next(next_request, None)
        if n is None:
            return
        body = photos[n % len(photos)]
        started = time.perf_counter()
        connection.request("POST", "/v1/identify", body, {"Content-Type": "image/jpeg"})
        response = connection.getresponse()
        answer = response.read()
        took = time.perf_counter() - started
        with lock:
            if response.status == 200 and json.loads(answer)["label"]:
                latencies.append(took)
            else:
                failures.append(response.status)


threads = [threading.Thread(target=worker) for _ in range(concurrency)]
started = time.perf_counter()
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
elapsed = time.perf_counter() - started
latencies.sort()


def percentile(q):
    return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]


print(json.dumps({
    "concurrency": concurrency,
    "requests": len(latencies),
    "failed": len(failures),
    "p50_ms": round(percentile(0.50), 2),
    "p99_ms": round(percentile(0.99), 2),
    "requests_per_s": round(len(latencies) / elapsed, 1),
}))
