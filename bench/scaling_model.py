"""The cost model of docs/scaling.md: wall time and compute cost of a FruitPipeline on EKS,
from the figures measured on this project's machine (bench/scaling_inputs.json, each with
the command that gives it) and a few stated assumptions about AWS.

    python bench/scaling_model.py bench/scaling_inputs.json [docs/scaling.png]

Prints a Markdown table per input size and writes a plot of time against pods (matplotlib).
"""
import json
import math
import sys

inputs = json.load(open(sys.argv[1]))
plot = sys.argv[2] if len(sys.argv) > 2 else None
m, a = inputs["measured"], inputs["assumed"]


def stages(photos, shard_size, pods, size):
    """Seconds per stage for `photos` photos in shards of `shard_size` on `pods` pods of
    2 vCPUs at `size` px."""
    shards = math.ceil(photos / shard_size)
    waves = math.ceil(shards / pods)
    start = a["pod_start_seconds"]
    extract_rate = m[f"extract_photos_per_second_2cpu_{size}"]
    # Listing: one pod, 1,000 keys per ListObjectsV2 page.
    plan = start + photos / 1000 * a["list_page_seconds"]
    # Each pod works a shard, then the next pod of the Job starts.
    extract = waves * (start + m["model_load_seconds"] + shard_size / extract_rate)
    # S3 GET rate: a fresh prefix serves about 5,500 GET/s until S3 splits it.
    gets_per_second = pods * extract_rate
    throttled = gets_per_second > a["s3_get_per_second_per_prefix"] * a["prefixes_in_use"]
    if throttled:
        extract = max(extract, photos / (a["s3_get_per_second_per_prefix"] * a["prefixes_in_use"]))
    partial_mb = m["partial_mb_dim_1280"]
    download = shards * partial_mb / a["fit_download_mb_per_second"]
    merge = shards * m["merge_ms_per_partial"] / 1000
    fit = start + max(download, merge) + m["eigendecomposition_seconds"]
    project = waves * (start + shard_size / m["projection_rows_per_second"]
                       + shard_size * m["feature_bytes_per_photo"] / 1e6
                       / a["pod_s3_mb_per_second"])
    assemble = start + shards / 32 * a["small_get_seconds"] + shards / 8 * a["upload_part_copy_seconds"]
    return {
        "plan": plan, "extract": extract, "fit": fit, "project": project, "assemble": assemble,
        "throttled": throttled, "shards": shards,
    }


def cost(photos, shard_size, pods, size):
    s = stages(photos, shard_size, pods, size)
    wall = s["plan"] + s["extract"] + s["fit"] + s["project"] + s["assemble"]
    # Pods are billed while they run; the node group scales with them (Karpenter, spot).
    pod_seconds = (s["plan"] + s["fit"] + s["assemble"]) + pods * (s["extract"] + s["project"])
    dollars = pod_seconds / 3600 * a["dollars_per_2cpu_hour"] + wall / 3600 * a["eks_dollars_per_hour"]
    requests = photos * 1 + s["shards"] * 8
    dollars += requests / 1000 * a["dollars_per_1000_get"]
    return wall, dollars, s


for run in inputs["runs"]:
    photos, shard_size = run["photos"], run["shard_size"]
    for size in inputs["sizes"]:
        print(f"\n{photos:,} photos in shards of {shard_size:,}, at {size} px")
        print("| pods | wall time | plan | extract | fit | project | assemble | cost | bottleneck |")
        print("|---|---|---|---|---|---|---|---|---|")
        for pods in inputs["pods"]:
            wall, dollars, s = cost(photos, shard_size, pods, size)
            parts = {k: s[k] for k in ("plan", "extract", "fit", "project", "assemble")}
            neck = max(parts, key=parts.get)
            if neck == "extract" and s["throttled"]:
                neck = "extract: S3 GET rate"
            if neck == "plan":
                neck = "plan: listing on one pod"
            print(f"| {pods} | {wall / 60:.1f} min | {s['plan'] / 60:.1f} min | {s['extract'] / 60:.1f} min | "
                  f"{s['fit'] / 60:.1f} min | {s['project'] / 60:.1f} min | {s['assemble'] / 60:.1f} min | "
                  f"${dollars:.2f} | {neck} |")

if plot:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pods_range = [5, 10, 20, 50, 100, 200, 400]
    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=110)
    for run in inputs["runs"]:
        photos, shard_size = run["photos"], run["shard_size"]
        for size, style in zip(inputs["sizes"], ("-", "--")):
            times = [cost(photos, shard_size, pods, size)[0] / 60 for pods in pods_range]
            axis.plot(pods_range, times, style, marker="o",
                      label=f"{photos / 1e6:g} M photos, shards of {shard_size:,}, {size} px")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("pods (2 vCPU each)")
    axis.set_ylabel("wall time (minutes)")
    axis.set_title("fruitpipe on EKS: modelled wall time against pods")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(plot)
    print(f"\nwrote {plot}")
