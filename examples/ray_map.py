"""Ray Data: label examples/reviews.jsonl with examples/sentiment.lmql on a Ray cluster, two actors,
each loading the model once (on a GPU when the cluster has one).

Run: python examples/ray_map.py            (starts a local Ray; on a cluster, ray.init(address="auto"))
Needs: pip install 'querylm[ray,local]'
"""

from pathlib import Path

import ray

import querylm.integrations.ray as qray

HERE = Path(__file__).resolve().parent


def main(rows: int | None = None, model: str | None = None) -> list[dict]:
    if not ray.is_initialized():
        ray.init(num_cpus=4)  # logical CPUs: two actors hold one each, and reading the rows needs one
    ds = ray.data.read_json(str(HERE / "reviews.jsonl"))  # columns: id, review, gold
    if rows is not None:
        ds = ds.limit(rows)
    labelled = qray.map_dataset(ds, HERE / "sentiment.lmql", concurrency=2, batch_size=4, model=model)
    out = sorted(labelled.take_all(), key=lambda r: r["id"])  # each row: id, review, gold, LABEL, error
    for r in out:
        print(f"{r['id']:>3}  {r['LABEL'] or 'ERROR: ' + r['error']:<9} (gold {r['gold']})  {r['review']}")
    right = sum(r["LABEL"] == r["gold"] for r in out)
    print(f"{right}/{len(out)} agree with the gold labels")
    return out


if __name__ == "__main__":
    results = main()
