"""The reference library at scale: N generated prompts (1,000,000 by default) written as a DiffusionDB-shaped parquet,
imported (embedding included), then searched by words and by meaning; prints a Markdown table.

Goals: import >= 20,000 prompts/s, search p95 <= 50 ms for words and for meaning, the library <= 1 GB for 1M.

    PYTHONPATH=src python benchmarks/library.py              # 1M prompts
    PYTHONPATH=src python benchmarks/library.py --n 200000   # smaller, on a busy machine
"""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
import tempfile
import time
from pathlib import Path

SUBJECTS = ("a cat", "an old fisherman", "a castle", "a robot", "a dragon", "a lighthouse", "a forest", "a city street",
            "a bowl of fruit", "a sports car", "a portrait of a woman", "a mountain lake", "a spaceship", "a fox", "a samurai",
            "a cottage", "an astronaut", "a ballerina", "a tiger", "a steam train", "a jellyfish", "a knight", "an owl")
PLACES = ("in a misty forest", "at sunset", "on the moon", "under the sea", "in a neon city", "in the rain", "on a cliff",
          "in a snowy valley", "in a library", "at dawn", "in the desert", "on a rooftop", "in a garden", "in space")
STYLES = ("oil painting", "watercolour", "digital art", "photograph, 35mm", "concept art", "pencil sketch", "octane render",
          "studio ghibli style", "by greg rutkowski", "trending on artstation", "unreal engine", "ukiyo-e", "pixel art")
EXTRAS = ("highly detailed", "sharp focus", "dramatic lighting", "soft light", "4k", "8k", "intricate", "cinematic",
          "vivid colours", "golden hour", "volumetric fog", "masterpiece", "bokeh", "wide angle", "symmetrical")


def prompt(rng: random.Random) -> str:
    extras = rng.sample(EXTRAS, rng.randint(1, 6))
    return ", ".join([f"{rng.choice(SUBJECTS)} {rng.choice(PLACES)}", *rng.sample(STYLES, rng.randint(1, 3)), *extras]) + f", v{rng.randint(0, 99999)}"


def write_parquet(path: Path, n: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    writer = None
    chunk = 100_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        table = pa.table({
            "image_name": [f"{start + i:08d}.png" for i in range(m)], "prompt": [prompt(rng) for _ in range(m)],
            "part_id": pa.array([(start + i) // 1000 for i in range(m)], pa.uint16()),
            "seed": pa.array([rng.randrange(2**32) for _ in range(m)], pa.uint32()),
            "step": pa.array([rng.choice((20, 30, 50)) for _ in range(m)], pa.uint16()),
            "cfg": pa.array([rng.choice((5.0, 7.0, 7.5, 9.0)) for _ in range(m)], pa.float32()),
            "sampler": pa.array([rng.randint(1, 8) for _ in range(m)], pa.uint8()),
            "width": pa.array([rng.choice((512, 768)) for _ in range(m)], pa.uint16()),
            "height": pa.array([rng.choice((512, 768)) for _ in range(m)], pa.uint16()),
            "user_name": ["bench"] * m, "timestamp": [datetime.datetime(2022, 8, 1)] * m,
            "image_nsfw": pa.array([rng.random() * 0.6 for _ in range(m)], pa.float32()),
            "prompt_nsfw": pa.array([rng.random() * 0.3 for _ in range(m)], pa.float32()),
        })
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    args = parser.parse_args()

    from localdiffusion.library import Library

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        parquet = folder / "metadata.parquet"
        t = time.perf_counter()
        write_parquet(parquet, args.n)
        print(f"wrote {args.n} rows in {time.perf_counter() - t:.1f} s")
        with Library(folder / "home") as library:
            t = time.perf_counter()
            result = library.import_path(parquet)
            import_s = time.perf_counter() - t
            size = sum(p.stat().st_size for p in (folder / "home").glob("library.sqlite*"))
            rng = random.Random(1)
            words = [f"{rng.choice(SUBJECTS).split()[-1]} {rng.choice(PLACES).split()[-1]}" for _ in range(args.queries)]
            meanings = [f"a picture of {rng.choice(('a kitten', 'a sailor', 'a fortress', 'a machine', 'a car'))} "
                        f"{rng.choice(('at night', 'by the ocean', 'in winter', 'on a hill'))}" for _ in range(args.queries)]
            t = time.perf_counter()
            library.search("warm up", semantic=True)  # loads the bit matrix once
            load_s = time.perf_counter() - t
            timings = {}
            for name, queries, semantic in (("words", words, False), ("words + meaning", meanings, True)):
                times = []
                for q in queries:
                    t = time.perf_counter()
                    library.search(q, semantic=semantic, limit=20)
                    times.append(time.perf_counter() - t)
                timings[name] = times
            meaning_times = []
            for q in meanings:
                t = time.perf_counter()
                library.searcher.fetch(library.searcher.meaning(q, 20, __import__("localdiffusion.library", fromlist=["Filters"]).Filters()))
                meaning_times.append(time.perf_counter() - t)
            timings["meaning"] = meaning_times

    print()
    print("| what | result | goal |")
    print("| --- | --- | --- |")
    print(f"| prompts imported | {result['added']:,} | |")
    print(f"| import rate (parquet, embedding included) | {result['added'] / import_s:,.0f} prompts/s ({import_s:.1f} s) | ≥ 20,000/s |")
    print(f"| library on disk | {size / 2**20:,.0f} MiB | ≤ 1 GiB for 1M |")
    print(f"| first meaning search (loads the bit matrix) | {load_s * 1000:.0f} ms | |")
    for name, times in timings.items():
        print(f"| search p95, {name} ({len(times)} queries) | {p95(times):.1f} ms (median {statistics.median(times) * 1000:.1f}) | ≤ 50 ms |")


if __name__ == "__main__":
    main()
