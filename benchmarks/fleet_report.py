"""Output of fleet_scale.py: the machine line, the markdown table and the PNG plot."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {model}, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def later(r: dict, key: str) -> float:
    """Median of a round figure over rounds 2+ (round 1 of a fresh fleet ships the artifacts
    and embeds every photo: a first campaign, not a nightly one)."""
    values = [x[key] for x in r["rounds"][1:]] or [x[key] for x in r["rounds"]]
    return statistics.median(values)


COLUMNS = [
    ("N", lambda r: f"{r['nodes']}"),
    ("load before", lambda r: f"{r['load_before'][0]:.1f}"),
    ("campaign s", lambda r: f"{r['campaign_s']:.1f}"),
    ("round 1 s (overhead)", lambda r: f"{r['rounds'][0]['wall_s']:.1f} ({r['rounds'][0]['overhead_s']:.1f})"),
    ("rounds 2+ s (median)", lambda r: f"{later(r, 'wall_s'):.1f}"),
    ("slowest node compute s", lambda r: f"{later(r, 'slowest_node_compute_s'):.2f}"),
    ("overhead s/round", lambda r: f"{later(r, 'overhead_s'):.1f}"),
    ("coordinator CPU s", lambda r: f"{r['coordinator_cpu_s']:.1f} "
                                    f"({r['superlink_tree_cpu_s']:.1f} SL + {r['runner_cpu_s']:.1f} runner)"),
    ("coordinator peak RSS MB", lambda r: f"{r['coordinator_peak_rss_mb']:.0f}"),
    ("SuperLink DB MB", lambda r: f"{r['superlink_db_mb']:.2f}"),
    ("node RSS MB median / peak", lambda r: f"{r['node_rss']['median_mb']:.0f} / {r['node_rss']['peak_mb']:.0f}"),
    ("clientapps at once (peak)", lambda r: f"{r['clientapps_peak_concurrent']}"),
]


def markdown_table(results: list[dict]) -> str:
    lines = ["| " + " | ".join(name for name, _ in COLUMNS) + " |",
             "|" + "|".join("---:" for _ in COLUMNS) + "|"]
    for r in results:
        if r.get("status", "completed") == "completed":
            lines.append("| " + " | ".join(cell(r) for _, cell in COLUMNS) + " |")
        else:
            lines.append(f"| {r['nodes']} | {r['load_before'][0]:.1f} | {r['status']} after "
                         f"{r['campaign_s']:.0f}s: {r['reason'][:120]} (errors: {r['errors']}) |"
                         + " |" * (len(COLUMNS) - 3))
    return "\n".join(lines)


def _lines(ax, n: list[int], series: list[tuple[str, list[float]]], title: str, ylabel: str) -> None:
    for (label, values), marker in zip(series, ("o-", "s-", "^-")):
        ax.plot(n, values, marker, label=label)
    ax.set(title=title, xlabel="SuperNodes", ylabel=ylabel)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left")


def plot(results: list[dict], path: Path, title: str) -> Path:
    """Four panels against N: times, per-round split, coordinator cost, memory and DB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in results if r.get("status", "completed") == "completed"]
    n = [r["nodes"] for r in results]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    _lines(axes[0][0], n, [("campaign (submit to finished)", [r["campaign_s"] for r in results]),
                           ("round 1", [r["rounds"][0]["wall_s"] for r in results]),
                           ("rounds 2+ (median)", [later(r, "wall_s") for r in results])],
           "Wall time", "seconds")
    ax = axes[0][1]
    compute = [later(r, "slowest_node_compute_s") for r in results]
    overhead = [later(r, "overhead_s") for r in results]
    ax.bar([str(v) for v in n], compute, label="slowest node embed+train")
    ax.bar([str(v) for v in n], overhead, bottom=compute, label="overhead")
    ax.set(title="One round, rounds 2+ (median)", xlabel="SuperNodes", ylabel="seconds")
    ax.legend(loc="upper left")
    _lines(axes[1][0], n, [("SuperLink tree", [r["superlink_tree_cpu_s"] for r in results]),
                           ("runner process (+ flwr CLI)", [r["runner_cpu_s"] for r in results])],
           "Coordinator CPU per campaign", "CPU seconds")
    _lines(axes[1][1], n, [("coordinator peak RSS", [r["coordinator_peak_rss_mb"] for r in results]),
                           ("one node median RSS", [r["node_rss"]["median_mb"] for r in results]),
                           ("one node peak RSS", [r["node_rss"]["peak_mb"] for r in results])],
           "Memory", "MB")
    db = axes[1][1].twinx()
    db.plot(n, [r["superlink_db_mb"] for r in results], "kx--", label="SuperLink DB (right)")
    db.set(ylabel="SuperLink DB MB", ylim=(0, None))
    db.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def title(info: dict) -> str:
    return (f"Fleet scale: {info['rounds']} rounds x {info['epochs']} epochs, "
            f"16+4 photos per node; {info['machine'].split(',')[0]}, shared (load in the table)")


def report(info: dict, out: Path) -> str:
    """The table and the plot of a fleet_scale.json (also used by --replot)."""
    png = plot(info["results"], out / "fleet_scale.png", title(info))
    return f"{info['machine']}\n\n{markdown_table(info['results'])}\n\nplot: {png}"
