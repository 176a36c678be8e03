"""The cost of the audit log: 8 clients against the service as shipped, with the log (every record
fsynced before its request answers) and without it, one after the other on the same machine; and
the raw rate of appends (one process, and four processes sharing one log).

    python -m bench.audit_cost [--model base] [--clients 8] [--seconds 60] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.speech import clips

from bench.clients import default_service, load
from bench.common import bench_args, chosen_model, machine, machine_line, ratio, save
from hushscribe.audit.events import SERVICE, event
from hushscribe.audit.log import AuditLog
from hushscribe.audit.verify import verify
from hushscribe.settings_audit import AuditSettings


def _append(audit_dir: str, keys_dir: str, n: int) -> None:
    log = AuditLog(AuditSettings(), Path(audit_dir), Path(keys_dir))
    for i in range(n):
        log.append(event("result_read", SERVICE, target=f"job{i}", details={"format": "srt"}))
    log.close()


def append_rate(tmp: Path, processes: int, per_process: int) -> dict[str, Any]:
    audit_dir, keys_dir = tmp / f"audit-{processes}", tmp / f"keys-{processes}"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append, args=(str(audit_dir), str(keys_dir), per_process))
             for _ in range(processes)]  # fmt: skip
    started = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    wall = time.perf_counter() - started
    report = verify(audit_dir, hmac_key=keys_dir / "audit-hmac.key")
    assert report.ok, report
    total = processes * per_process
    return {"processes": processes, "records": total, "seconds": round(wall, 2),
            "records_per_second": round(total / wall, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_args(parser)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    model = chosen_model(args)
    seconds = 15 if args.quick else args.seconds
    models_dir = (args.data_dir / "models").resolve()
    files = [(c.path, c.duration) for c in clips() if c.language == "en" and c.duration < 15]
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for label, enabled in (("with the audit log", True), ("without", False)):
            svc = default_service(tmp / label.replace(" ", "-"), models_dir, model, args.device)
            svc.env["HUSHSCRIBE_AUDIT__ENABLED"] = "true" if enabled else "false"
            svc.start(timeout=300)
            try:
                with svc.client(timeout=900) as c:  # warm: both workers load the model
                    for path, _ in files[:2]:
                        c.post("/v1/audio/transcriptions", files={"file": path.open("rb")})
                runs[label] = load(lambda s=svc: s.client(timeout=900), files, args.clients,
                                   seconds)  # fmt: skip
                records = sum(1 for _ in (svc.data_dir / "audit").glob("*.jsonl"))
                runs[label]["audit_files"] = records
            finally:
                svc.stop()
            print(label, runs[label], flush=True)
        per = 200 if args.quick else 2000
        rates = [append_rate(tmp, 1, per), append_rate(tmp, 4, per // 4)]
    with_log, without = runs["with the audit log"], runs["without"]
    payload = {
        "machine": machine(), "model": model, "clients": args.clients, "seconds": seconds,
        "runs": runs, "append_rates": rates,
        "throughput_ratio": ratio(with_log["audio_per_second"], without["audio_per_second"]),
    }  # fmt: skip
    rows = "\n".join(
        f"| {label} | {r['requests']} | {r['errors']} | {r['audio_per_second']} | "
        f"{r['p50_s']} | {r['p95_s']} |"
        for label, r in runs.items()
    )
    appends = "; ".join(
        f"{r['processes']} process{'es' if r['processes'] > 1 else ''}: "
        f"{r['records_per_second']} records/s"
        for r in rates
    )
    section = f"""## Cost of the audit log

`python -m bench.audit_cost` — {args.clients} clients posting short English clips for {seconds:g} s
to the service as shipped (two workers, model `{model}`), once with the audit log (each record
fsynced before its request answers: upload, transcription, result read) and once without
(`audit.enabled = false`). {machine_line(payload["machine"])}

| audit log | requests | errors | audio s/s | p50 s | p95 s |
|---|---|---|---|---|---|
{rows}

Throughput with the log / without: **{payload["throughput_ratio"]}**. Raw appends (fsync each,
lock shared between processes, then verified): {appends}.
"""
    save("audit_cost", payload, section, quick=args.quick)


if __name__ == "__main__":
    main()
