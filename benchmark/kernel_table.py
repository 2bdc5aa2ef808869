"""The table ``fiited-kernels`` prints: times, ratios to the peers, the method case, and the
conditions (threads, load, OpenMP, THP) without which a speed figure should not be quoted."""
from __future__ import annotations


def table(report: dict) -> str:
    m = report["meta"]
    lines = []
    if m["loaded"]:
        lines += [f"WARNING: load average {m['load_before'][0]:.2f} exceeded the {m['cores']} "
                  "cores before the run: other work shares the machine, so no ratio is printed "
                  "(times are shown, but do not quote them)", ""]
    head = (f"{'op':<7} {'impl':<13} {'thr':>3} {'B':>6} {'D':>4} {'K':>2} {'present':>7} "
            f"{'ms':>9} {'Mlookup/s':>10} {'GB/s':>7} {'vs rowwise':>10} {'vs fbgemm':>9} "
            f"{'vs torch':>8}")
    lines += [head, "-" * len(head)]
    fmt = lambda x: f"{x:.2f}" if x is not None else "-"  # noqa: E731
    for r in sorted(report["results"], key=lambda r: (r["op"], r["threads"], r["batch"],
                                                      r["dim"], r["chunks"],
                                                      -r["present_fraction"])):
        lines.append(
            f"{r['op']:<7} {r['impl']:<13} {r['threads']:>3} {r['batch']:>6} {r['dim']:>4} "
            f"{r['chunks']:>2} {r['present_fraction']:>7.4g} {r['median_s'] * 1e3:>9.2f} "
            f"{r['lookups_per_s'] / 1e6:>10.2f} {r['gb_per_s']:>7.2f} "
            f"{fmt(r['ratio_vs_torch_rowwise']):>10} {fmt(r['ratio_vs_fbgemm']):>9} "
            f"{fmt(r['ratio_vs_torch']):>8}")
    if report["fiited_like"]:
        lines += ["", "Synthetic sparse kernel shape: K=4, a random 1/16 of chunks present, vs "
                  "uniform K=1 (same B, F, D). Not FIITED: see the method case below."]
        for r in report["fiited_like"]:
            ratio = "-" if m["loaded"] else f"{r['ratio_vs_uniform']:.2f}"
            lines.append(f"  {r['op']:<7} {r['impl']:<10} thr={r['threads']} B={r['batch']:<6} "
                         f"D={r['dim']:<4} {r['lookups_per_s'] / 1e6:8.2f} vs "
                         f"{r['uniform_lookups_per_s'] / 1e6:8.2f} Mlookup/s  ratio {ratio}")
    if report.get("method_case"):
        mc = m["config"]["method"]
        lines += ["", f"Method case: real embedding steps (forward + fused update + utilities + "
                  f"on_step), FIITED K={mc['chunks']} index={mc['index']} at total budget "
                  f"{mc['budget']:.4g}, after {mc['warmup_steps']} warm-up steps with 2 events"]
        for r in report["method_case"]:
            lines.append(f"  {r['method']:<9} thr={r['threads']} B={r['batch']:<6} "
                         f"D={r['dim']:<4} {r['median_s'] * 1e3:8.2f} ms  present share "
                         f"{r['present_share']:.2f}  vs uniform {fmt(r['ratio_vs_uniform'])}")
    lines += ["", "vs rowwise / vs fbgemm / vs torch: lookups/s over the K=1 peer's at the same "
              "threads, B, F, D; lookup ops compare with the peer's forward.",
              "rowwise = EmbeddingBag(sparse) + row-wise Adagrad in torch (like for like); "
              "torch = the same with torch.optim.Adagrad, which is ELEMENT-wise Adagrad.",
              m["notes"][1]]
    thp = m.get("thp_mem_alloc_enable", "unset")
    omp = " ".join(f"{k}={v}" for k, v in m["omp"].items() if v != "unset") or "OMP: defaults"
    lines.append(f"threads={m['threads']} of {m['cores']} cores; load before/after "
                 f"{m['load_before'][0]:.2f}/{m['load_after'][0]:.2f}; {omp}; native core: "
                 f"{m['cpu_native']}; fbgemm: {m['fbgemm']}; THP_MEM_ALLOC_ENABLE={thp}")
    if thp != "1":
        lines.append("(without THP_MEM_ALLOC_ENABLE=1, faulting in fresh pages for each large "
                     "output costs every implementation alike and can dominate at B=16384; "
                     "`make bench` sets it)")
    return "\n".join(lines)
